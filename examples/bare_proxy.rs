//! A minimal hyper reverse proxy with no authentication, the yardstick for the relay: it
//! forwards every request to one upstream with a pooled client. Used by `bench/run.sh`.
//!
//! cargo run --release --example bare_proxy -- 127.0.0.1:9102 http://127.0.0.1:9101

use axum::body::Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9102".into());
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9101".into());
    let client: Client<HttpConnector, hyper::body::Incoming> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move {
                    let target = format!(
                        "{upstream}{}",
                        req.uri().path_and_query().map_or("/", |p| p.as_str())
                    );
                    *req.uri_mut() = target
                        .parse()
                        .map_err(|e| std::io::Error::other(format!("{e}")))?;
                    match client.request(req).await {
                        Ok(response) => Ok::<_, std::io::Error>(response.map(Body::new)),
                        Err(e) => Err(std::io::Error::other(e)),
                    }
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
