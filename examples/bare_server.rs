//! The ceiling for any HTTP endpoint on this machine: a minimal hyper server answering every
//! request with a fixed 5-byte body. Used by `bench/run.sh`.
//!
//! cargo run --release --example bare_server -- 127.0.0.1:9101

use std::convert::Infallible;

use axum::body::Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9101".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(hyper::Response::new(Body::from("hello")))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
