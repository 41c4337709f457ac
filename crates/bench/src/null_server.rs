//! A trivial S3-shaped responder: answers every request at once (PUT with the MD5 of the body as
//! ETag, GET with an empty body), so `ironbucket-bench` can be measured without a real server.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::Digest;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let body = req.into_body().collect().await?.to_bytes();
    let mut resp = Response::new(Full::new(Bytes::new()));
    if method == hyper::Method::PUT {
        let etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&body)));
        if let Ok(v) = hyper::header::HeaderValue::from_str(&etag) {
            resp.headers_mut().insert("etag", v);
        }
    }
    if method == hyper::Method::DELETE {
        *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
    }
    Ok(resp)
}

pub async fn serve(listen: &str) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("null server listening on http://{}", listener.local_addr()?);
    loop {
        let (sock, _) = listener.accept().await?;
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), hyper::service::service_fn(handle))
                .await;
        });
    }
}
