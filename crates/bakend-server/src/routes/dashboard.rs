//! `/_/`: the admin dashboard's files (docs/dashboard.md). Static and public — the page signs in
//! through the API like any other client, so nothing here looks at a token.
//!
//! `/_` redirects to `/_/`. A path naming an embedded file gets that file; any other path
//! without a dot in its last segment is a client-side route and gets `index.html`; the rest is
//! 404. Every answer carries the dashboard's security headers.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

use crate::dashboard::{self, INDEX, Prepared};
use crate::error::ApiError;
use crate::routes::table::DASHBOARD_PATH;

/// Script and styles only from the dashboard's own files (no inline script, no `style`
/// attributes), images also from `blob:` (previews of protected files, fetched with the token),
/// API calls and the WebSocket to this origin only, no framing, and Trusted Types so that no
/// string can ever reach an HTML sink such as `innerHTML` (the browser throws instead).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
    connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

pub async fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Err(ApiError::method_not_allowed());
    }
    let Some(rest) = path.strip_prefix(DASHBOARD_PATH) else {
        // `/_` itself.
        return Ok(secured(
            StatusCode::PERMANENT_REDIRECT,
            Body::empty(),
            &[(header::LOCATION, DASHBOARD_PATH)],
        ));
    };
    let all = dashboard::prepared().await;
    let name = if rest.is_empty() { INDEX } else { rest };
    let asset = match dashboard::find(all, name) {
        Some(a) => a,
        None if !last_segment(rest).contains('.') => {
            dashboard::find(all, INDEX).ok_or_else(|| ApiError::internal("index.html missing"))?
        }
        None => return Err(ApiError::not_found("Not found")),
    };
    Ok(respond(asset, method, headers))
}

fn last_segment(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn respond(asset: &Prepared, method: &Method, headers: &HeaderMap) -> Response {
    let (body, etag, encoding) = match &asset.gzip {
        Some(z) if accepts_gzip(headers) => (z.clone(), asset.etag_gzip.as_str(), Some("gzip")),
        _ => (asset.body.clone(), asset.etag.as_str(), None),
    };
    let mut extra: Vec<(header::HeaderName, &str)> = vec![
        (header::CONTENT_TYPE, asset.asset.content_type),
        (header::ETAG, etag),
        // The files change only with the binary, and their URLs carry no version: revalidate
        // every time (a 304 costs a round trip, not the bytes).
        (header::CACHE_CONTROL, "no-cache"),
        (header::VARY, "Accept-Encoding"),
    ];
    if let Some(e) = encoding {
        extra.push((header::CONTENT_ENCODING, e));
    }
    if not_modified(headers, asset) {
        return secured(StatusCode::NOT_MODIFIED, Body::empty(), &extra);
    }
    let len = body.len().to_string();
    extra.push((header::CONTENT_LENGTH, len.as_str()));
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    secured(StatusCode::OK, body, &extra)
}

/// A response with the dashboard's security headers and `extra`.
fn secured(status: StatusCode, body: Body, extra: &[(header::HeaderName, &str)]) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name.clone(), v);
        }
    }
    resp
}

/// `If-None-Match` naming either encoding's validator (or `*`): the client has this file.
fn not_modified(headers: &HeaderMap, asset: &Prepared) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == asset.etag || t == asset.etag_gzip)
}

/// `Accept-Encoding` lists `gzip` (or `*`) without `q=0`.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn gzip_is_used_when_accepted() {
        let ae = header::ACCEPT_ENCODING;
        assert!(accepts_gzip(&with(ae.clone(), "gzip, deflate, br")));
        assert!(accepts_gzip(&with(ae.clone(), "br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with(ae.clone(), "*")));
        assert!(!accepts_gzip(&with(ae.clone(), "gzip;q=0")));
        assert!(!accepts_gzip(&with(ae.clone(), "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn client_routes_are_paths_without_a_dot() {
        assert_eq!(last_segment("collections/posts"), "posts");
        assert_eq!(last_segment("js/x.js"), "x.js");
        assert_eq!(last_segment(""), "");
    }
}
