//! The dashboard (web/): a page and its assets embedded in the binary and
//! served at `/` on the API's port; nothing is fetched from elsewhere.
//! Pages (hash routes of one page): Flips (recommendations and the player's
//! watched offers, refreshed on every tick over the websocket), Item (price
//! chart, live fill-probability surface, item facts), Accuracy (live
//! figures and reliability) and Status.

use warp::http::header;
use warp::{Filter, Rejection, Reply};

const INDEX: &str = include_str!("../web/index.html");
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/app.js"),
    ),
    (
        "chart.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/chart.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
];

/// Scripts and styles from this origin only; the websocket to this host.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'";

fn page(body: &'static str, content_type: &'static str) -> warp::reply::Response {
    let mut r = warp::reply::with_header(body, header::CONTENT_TYPE, content_type).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        CSP.parse().expect("a header"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        "nosniff".parse().expect("a header"),
    );
    // Assets change with the binary: revalidate rather than cache for long.
    h.insert(header::CACHE_CONTROL, "no-cache".parse().expect("a header"));
    r
}

/// `GET /` and `GET /assets/{name}`.
pub fn routes() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| page(INDEX, "text/html; charset=utf-8"));
    let asset =
        warp::path!("assets" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                ASSETS
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, ct, body)| page(body, ct))
                    .ok_or_else(warp::reject::not_found)
            });
    index.or(asset).unify()
}
