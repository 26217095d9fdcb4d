//! Connections of their own for the one-row reads a cache miss makes (a client by key id, by
//! client id, by legacy digest), so that each costs one round trip. sqlx's pool pings every
//! connection it takes back (a second round trip per query, which its options cannot turn
//! off); a lane is taken and given back without one. A lane whose connection fails a query is
//! opened again and the read made once more; a read abandoned half-way (its request
//! cancelled) closes its connection, and the lane opens a new one when next used.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{Connection, FromRow};
use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

/// A lane's connection, once opened.
type Lane = Option<PgConnection>;

pub struct Lanes {
    options: PgConnectOptions,
    lanes: Box<[Mutex<Lane>]>,
    /// One permit per lane: reads wait here, in turn, and a read holding a permit always
    /// finds a free lane (a lane is taken after a permit and given back before it).
    turns: Semaphore,
    next: AtomicUsize,
    /// How long a read may wait for its lane and its connection, as the pool's acquire.
    timeout: Duration,
}

impl Lanes {
    /// `count` lanes to the database of `options`, each opened when first used.
    pub fn new(options: PgConnectOptions, count: usize, timeout: Duration) -> Self {
        Lanes {
            options,
            lanes: (0..count.max(1)).map(|_| Mutex::new(None)).collect(),
            turns: Semaphore::new(count.max(1)),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The row `sql` selects with its one parameter `value`, if any.
    pub async fn fetch_optional<T>(&self, sql: &str, value: &str) -> Result<Option<T>, sqlx::Error>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        // The lane is given back before the permit (bindings drop in reverse order).
        let (_permit, mut lane) = self.within_timeout(self.take()).await?;
        // A connection kept from earlier may have died since (the database restarted, a
        // proxy in between closed it): its failure is not the database's answer, so the read
        // is made once more on a new connection.
        if let Some(mut connection) = lane.take() {
            if let Ok(row) = fetch(sql, value, &mut connection).await {
                *lane = Some(connection);
                return Ok(row);
            }
        }
        let mut connection = self
            .within_timeout(PgConnection::connect_with(&self.options))
            .await?;
        let row = fetch(sql, value, &mut connection).await?;
        *lane = Some(connection);
        Ok(row)
    }

    /// A permit and a free lane: a read holding a permit always finds one.
    async fn take(&self) -> Result<(SemaphorePermit<'_>, MutexGuard<'_, Lane>), sqlx::Error> {
        let permit = self
            .turns
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // Lanes are tried from the next in turn, so all of them stay in use.
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let len = self.lanes.len();
        let free = (0..len).find_map(|i| self.lanes[(first + i) % len].try_lock().ok());
        let lane = match free {
            Some(lane) => lane,
            None => self.lanes[first % len].lock().await,
        };
        Ok((permit, lane))
    }

    /// Waiting for a lane or a connection fails as the pool's acquire does.
    async fn within_timeout<T>(
        &self,
        wait: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        tokio::time::timeout(self.timeout, wait)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }
}

async fn fetch<T>(
    sql: &str,
    value: &str,
    connection: &mut PgConnection,
) -> Result<Option<T>, sqlx::Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(value)
        .fetch_optional(connection)
        .await
}
