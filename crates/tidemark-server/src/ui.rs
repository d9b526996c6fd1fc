//! Pages a person opens in a browser: a login with a read token (kept in
//! an HttpOnly, SameSite=Strict session cookie that expires with the
//! token; never in a URL), the groups, a group's overview and its timeline.
//! Plain server-rendered HTML: no script, nothing fetched from a CDN.
//!
//! These pages are not the API (`schemas/openapi.json` describes that):
//! a request without a valid session is sent to the login page.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tidemark_core::Timestamp;

use crate::routes::{AppState, check_token, store_problem};

/// The session cookie's name.
const COOKIE: &str = "tidemark_session";

pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/ui/", get(groups))
        .route("/ui/groups/{group}", get(overview))
        .route("/ui/groups/{group}/timeline", get(timeline))
        .route_layer(middleware::from_fn_with_state(state, require_session));
    Router::new().route("/ui/login", get(login_page).post(login)).route("/ui/logout", post(logout)).merge(pages)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // The pages load nothing from anywhere else, and run no script.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(c) = cookie
        && let Ok(v) = c.parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn login_form(message: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tidemark — log in</title>\
<style>body{{font-family:sans-serif;margin:40px}}input{{width:40em}}.bad{{color:#a31515}}</style></head>\n<body>\n\
<h1>tidemark</h1>\n<p class=\"bad\" id=\"message\">{}</p>\n\
<form method=\"post\" action=\"/ui/login\"><label>Read token (<code>tidemark token issue --key KEY</code>)<br>\
<input type=\"password\" name=\"token\" autocomplete=\"off\" required></label><br><button type=\"submit\">log in</button></form>\n</body></html>\n",
        esc(message)
    )
}

async fn login_page() -> Response {
    html(StatusCode::OK, login_form(""))
}

/// `token=…` of an `application/x-www-form-urlencoded` body.
fn form_token(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text.split('&').find_map(|kv| kv.strip_prefix("token="))?;
    let mut out = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A valid read token becomes a session cookie that lasts as long as the token.
async fn login(State(s): State<AppState>, body: Bytes) -> Response {
    let Some(token) = form_token(&body) else {
        return html(StatusCode::BAD_REQUEST, login_form("send the form's token field"));
    };
    match check_token(&s, &token) {
        Err(p) => html(StatusCode::UNAUTHORIZED, login_form(&format!("not logged in: {}", p.detail))),
        Ok(claims) => {
            let now = (s.clock)();
            let max_age = (claims.expires_at.as_micros() - now.as_micros()).max(0) / 1_000_000;
            let cookie = format!("{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}", token.trim());
            redirect("/ui/", Some(cookie))
        }
    }
}

async fn logout() -> Response {
    redirect("/ui/login", Some(format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")))
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(str::to_owned).filter(|t| !t.is_empty())
    })
}

/// Pages need a session whose token still holds (revoking the key ends it).
async fn require_session(State(s): State<AppState>, request: Request, next: Next) -> Response {
    match session_token(request.headers()) {
        Some(t) if check_token(&s, &t).is_ok() => next.run(request).await,
        _ => redirect("/ui/login", None),
    }
}

async fn groups(State(s): State<AppState>) -> Response {
    let status = match s.ledger.read().expect("ledger lock").recovery_status() {
        Ok(st) => st,
        Err(e) => return store_problem(e).into_response(),
    };
    let now = (s.clock)();
    let mut rows = String::new();
    for g in &status.groups {
        let rpo = tidemark_lineage::status::rpo_seconds(now, g.newest_restorable);
        rows += &format!(
            "<li><a href=\"/ui/groups/{n}\">{n}</a> — live RPO {}</li>\n",
            if rpo.is_infinite() { "unbounded".to_owned() } else { format!("{rpo:.0} s") },
            n = esc(&g.group)
        );
    }
    if rows.is_empty() {
        rows = "<li>no group is defined (`tidemark group define`)</li>".into();
    }
    html(
        StatusCode::OK,
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tidemark — groups</title>\
<style>body{{font-family:sans-serif;margin:24px}}form{{display:inline}}</style></head>\n<body>\n<h1>Groups</h1>\n<ul id=\"groups\">\n{rows}</ul>\n\
<form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">log out</button></form>\n</body></html>\n"
        ),
    )
}

async fn overview(State(s): State<AppState>, Path(group): Path<String>) -> Response {
    let now: Timestamp = (s.clock)();
    let ledger = s.ledger.read().expect("ledger lock");
    let report = match ledger.group_report(&group) {
        Ok(r) => r,
        Err(e) => return store_problem(e).into_response(),
    };
    let status = match ledger.recovery_status() {
        Ok(st) => st.groups.into_iter().find(|g| g.group == group),
        Err(e) => return store_problem(e).into_response(),
    };
    drop(ledger);
    let Some(status) = status else {
        return store_problem(tidemark_store::StoreError::NotFound(format!("no group {group}"))).into_response();
    };
    html(StatusCode::OK, tidemark_lineage::timeline::overview_html(&report, &status, now))
}

async fn timeline(State(s): State<AppState>, Path(group): Path<String>) -> Response {
    match s.ledger.read().expect("ledger lock").group_report(&group) {
        Ok(r) => html(StatusCode::OK, tidemark_lineage::timeline::html(&r)),
        Err(e) => store_problem(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_token_is_percent_decoded() {
        assert_eq!(form_token(b"token=abc%2Bdef.ghi").as_deref(), Some("abc+def.ghi"));
        assert_eq!(form_token(b"x=1&token=a+b").as_deref(), Some("a b"));
        assert_eq!(form_token(b"nothing=1"), None);
        assert_eq!(form_token(b"token=%zz"), None);
    }

    #[test]
    fn the_session_is_read_from_the_cookie_header_only() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "a=1; tidemark_session=tok; b=2".parse().unwrap());
        assert_eq!(session_token(&h).as_deref(), Some("tok"));
        h.insert(header::COOKIE, "tidemark_session=".parse().unwrap());
        assert_eq!(session_token(&h), None);
    }
}
