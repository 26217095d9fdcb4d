//! `last_used_at` without a database write per request: uses are collected in memory and
//! written in one batch every few seconds and at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::domain::Error;
use crate::domain::client::ClientId;
use crate::storage::Store;

#[derive(Clone, Default)]
pub struct LastUse {
    pending: Arc<Mutex<HashMap<ClientId, DateTime<Utc>>>>,
}

impl LastUse {
    pub fn record(&self, client: &ClientId, at: DateTime<Utc>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(client) {
            Some(last) if *last >= at => {}
            Some(last) => *last = at,
            None => {
                pending.insert(client.clone(), at);
            }
        }
    }

    /// Writes what was collected; on failure keeps it for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> Result<(), Error> {
        let batch: Vec<(ClientId, DateTime<Utc>)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if let Err(e) = store.record_last_used(&batch).await {
            for (client, at) in &batch {
                self.record(client, *at);
            }
            return Err(e.into());
        }
        Ok(())
    }
}
