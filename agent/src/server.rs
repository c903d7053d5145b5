//! Serves `/metrics` over HTTP/1.1 (hyper), and the status page at `/`.

use std::{
    convert::Infallible,
    io::ErrorKind,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::{net::TcpListener, sync::watch};
use tracing::debug;

use crate::{
    error::StartError,
    metrics::{render, StatusNames, StatusPage, STATUS_SAMPLE_EVERY},
};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Binds before loading anything, so a busy port fails fast and clearly.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| match source.kind() {
        ErrorKind::AddrInUse => StartError::AddrInUse { addr },
        _ => StartError::Listen { addr, source },
    })?;
    listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
        .map_err(|source| StartError::Listen { addr, source })
}

/// Serves until `shutdown`; with `status` (the page's family names), also
/// the status page, sampling the registry every [`STATUS_SAMPLE_EVERY`].
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    status: Option<StatusNames>,
    mut shutdown: watch::Receiver<bool>,
) {
    let page = status.map(|names| Arc::new(Mutex::new(StatusPage::new(names))));
    let mut sample = tokio::time::interval(STATUS_SAMPLE_EVERY);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    debug!("accept failed: {e}");
                    continue;
                }
            },
            _ = sample.tick(), if page.is_some() => {
                if let Some(page) = &page {
                    if let Ok(mut p) = page.lock() {
                        p.sample(&registry, Instant::now());
                    }
                }
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let registry = registry.clone();
        let page = page.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, registry.clone(), page.clone()));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, "metrics connection ended: {e}");
            }
        });
    }
}

#[expect(
    clippy::unused_async,
    reason = "hyper's service_fn takes a function that returns a future"
)]
async fn respond(
    req: Request<Incoming>,
    registry: Registry,
    page: Option<Arc<Mutex<StatusPage>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (req.method(), req.uri().path(), &page) {
        (&Method::GET, "/metrics", _) => Response::builder()
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(render(&registry)))),
        (&Method::GET, "/", Some(page)) => {
            let html = page
                .lock()
                .map(|p| p.render(&registry, Instant::now()))
                .unwrap_or_default();
            Response::builder()
                .header(header::CONTENT_TYPE, HTML)
                .body(Full::new(Bytes::from(html)))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(
                b"not found; metrics are at /metrics\n",
            ))),
    };
    Ok(response.expect("static response parts are valid"))
}
