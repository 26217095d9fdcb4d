//! The console's own stylesheet and script, compiled into the binary and served under names
//! that carry a hash of their content, so browsers may keep them for a year.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

struct Asset {
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

fn asset(stem: &str, ext: &str, content_type: &'static str, body: &'static [u8]) -> Asset {
    let digest = Sha256::digest(body);
    let hash = crate::domain::hex(&digest[..6]);
    Asset {
        name: format!("{stem}.{hash}.{ext}"),
        content_type,
        body,
    }
}

static CSS: LazyLock<Asset> = LazyLock::new(|| {
    let body = include_bytes!("../../../assets/console.css");
    asset("console", "css", "text/css; charset=utf-8", body)
});
static JS: LazyLock<Asset> = LazyLock::new(|| {
    let body = include_bytes!("../../../assets/console.js");
    asset("console", "js", "text/javascript; charset=utf-8", body)
});

pub fn stylesheet_path() -> String {
    format!("/console/assets/{}", CSS.name)
}

pub fn script_path() -> String {
    format!("/console/assets/{}", JS.name)
}

/// `GET /console/assets/{name}`: only the current names exist.
pub async fn serve_asset(Path(name): Path<String>) -> Response {
    let Some(asset) = [&*CSS, &*JS].into_iter().find(|a| a.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        asset.body,
    )
        .into_response()
}
