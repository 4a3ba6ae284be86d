//! Dashboard sessions: the server-side session table, the sign-in rate limiter, and the
//! layer ([`require`]) over every page but the sign-in form and the stylesheet.
//!
//! - A session is opened by signing in with the master key or an admin token (`ui::auth`,
//!   which authenticates through the admin guard's own function). Its id is 256 random bits
//!   from the OS-seeded CSPRNG, sent once in the `tollgate_session` cookie (`HttpOnly;
//!   SameSite=Strict; Path=/ui`, plus `Secure` when a proxy says the request came over TLS
//!   with `X-Forwarded-Proto: https`); the table keeps only its SHA-256. A session holds the
//!   role and actor of the credential it was opened with and a CSRF token of its own.
//! - It ends after [`IDLE`] without a request, [`LIFETIME`] after it was opened, on sign-out,
//!   when the admin token it was opened with is revoked or expires, or when the table is full
//!   and it is the least recently used of [`MAX_SESSIONS`]. An unknown or ended session is
//!   sent to the sign-in page.
//! - Every request other than `GET`/`HEAD` must carry the session's CSRF token in the form
//!   field `csrf` (compared in constant time) and, when the browser sends `Origin`, come from
//!   this origin; anything else is a `403` page. Then the role is checked the way the admin
//!   guard checks it: a viewer may read every page and change nothing (sign-out excepted).
//! - Sign-in failures are counted per client address: after [`LOGIN_FAILURES`] within
//!   [`LOGIN_WINDOW`] the address gets `429` until the window ends, whatever it presents.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tollgate_store::Actor;

use crate::admin::{Caller, Role};
use crate::gateway::{Gateway, now_ms};
use crate::ui::html::{self, Chrome};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "tollgate_session";
/// A session ends after this long without a request.
pub(crate) const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after sign-in, however busy.
pub(crate) const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Sessions held at most; past it the least recently used one ends.
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Failed sign-ins an address may make per [`LOGIN_WINDOW`].
pub(crate) const LOGIN_FAILURES: u32 = 5;
pub(crate) const LOGIN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses the limiter tracks at most (the oldest windows are forgotten first).
const MAX_TRACKED: usize = 10_000;
/// The largest form a page posts.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// The sign-out route, the one change a viewer may make.
pub(crate) const LOGOUT: &str = "/ui/logout";

/// A signed-in browser, in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) role: Role,
    pub(crate) actor: Actor,
    pub(crate) csrf: String,
    /// The client's socket address on this request.
    pub(crate) address: Option<SocketAddr>,
}

impl Session {
    /// The admin caller this session acts as (for the audit trail).
    pub(crate) fn caller(&self) -> Caller {
        Caller {
            role: self.role,
            actor: self.actor.clone(),
            address: self.address,
        }
    }

    pub(crate) fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// What the page header shows.
    pub(crate) fn chrome(&self) -> Chrome {
        let who = match &self.actor {
            Actor::Master => "master key".to_string(),
            Actor::Token { id } => format!("token {id}"),
            Actor::Cli { .. } => "cli".to_string(),
        };
        Chrome {
            who,
            role: match self.role {
                Role::Admin => "admin",
                Role::Viewer => "viewer",
            },
            csrf: self.csrf.clone(),
        }
    }
}

/// A posted form's fields, in the request's extensions (after the CSRF check).
#[derive(Debug, Clone, Default)]
pub(crate) struct Form(pub(crate) Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(bytes: &[u8]) -> Form {
        Form(serde_urlencoded::from_bytes(bytes).unwrap_or_default())
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

struct Entry {
    role: Role,
    actor: Actor,
    csrf: String,
    opened: Instant,
    seen: Instant,
}

/// The session table and the sign-in limiter (one per app).
#[derive(Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Entry>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// 256 random bits as hex.
fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn digest(id: &str) -> String {
    tollgate_attribution::keys::hash_hex(id)
}

impl Sessions {
    pub(crate) fn new() -> Arc<Sessions> {
        Arc::new(Sessions::default())
    }

    /// Opens a session; returns its id (for the cookie, never stored) and the session.
    pub(crate) fn open(&self, role: Role, actor: Actor, now: Instant) -> (String, Session) {
        let id = random_token();
        let csrf = random_token();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, e| live(e, now));
        if t.len() >= MAX_SESSIONS
            && let Some(oldest) = t.iter().min_by_key(|(_, e)| e.seen).map(|(k, _)| k.clone())
        {
            t.remove(&oldest);
        }
        t.insert(
            digest(&id),
            Entry {
                role,
                actor: actor.clone(),
                csrf: csrf.clone(),
                opened: now,
                seen: now,
            },
        );
        let session = Session {
            role,
            actor,
            csrf,
            address: None,
        };
        (id, session)
    }

    /// The session with id `id`, touched, if it is live and `valid` still accepts its actor;
    /// an ended one is removed.
    pub(crate) fn get(
        &self,
        id: &str,
        now: Instant,
        valid: impl Fn(&Actor) -> bool,
    ) -> Option<Session> {
        let key = digest(id);
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let e = t.get_mut(&key)?;
        if !live(e, now) || !valid(&e.actor) {
            t.remove(&key);
            return None;
        }
        e.seen = now;
        Some(Session {
            role: e.role,
            actor: e.actor.clone(),
            csrf: e.csrf.clone(),
            address: None,
        })
    }

    /// Ends the session with id `id` (sign-out).
    pub(crate) fn close(&self, id: &str) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.remove(&digest(id));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// `Err(wait)` when `ip` has used up its failed sign-ins for the current window.
    pub(crate) fn sign_in_allowed(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match f.get(&ip) {
            Some((start, n)) if *n >= LOGIN_FAILURES => {
                let end = *start + LOGIN_WINDOW;
                if end > now { Err(end - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed sign-in from `ip`.
    pub(crate) fn sign_in_failed(&self, ip: IpAddr, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= MAX_TRACKED {
            f.retain(|_, (start, _)| now.saturating_duration_since(*start) < LOGIN_WINDOW);
            if f.len() >= MAX_TRACKED
                && let Some(oldest) = f.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k)
            {
                f.remove(&oldest);
            }
        }
        let e = f.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= LOGIN_WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Forgets `ip`'s failures (a successful sign-in).
    pub(crate) fn sign_in_succeeded(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.remove(&ip);
    }
}

fn live(e: &Entry, now: Instant) -> bool {
    now.saturating_duration_since(e.seen) < IDLE
        && now.saturating_duration_since(e.opened) < LIFETIME
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Whether the request says it came over TLS (a proxy's `X-Forwarded-Proto: https`; the
/// gateway itself serves plain HTTP).
pub(crate) fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value opening (`Some(id)`) or clearing (`None`) the session cookie.
pub(crate) fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/ui{secure}"),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/ui; Max-Age=0{secure}"),
    }
}

/// Whether `Origin`, when the browser sent one, is this server (`Host`).
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

/// Where the sign-in page sends a browser after it signs in: `next` when it is a dashboard
/// path (never another origin), else the overview.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/ui" || n.starts_with("/ui/"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/ui/".to_string(),
    }
}

/// Whether the actor a session was opened with may still sign in: the master key while one
/// is configured, a token while it is live.
pub(crate) fn actor_valid(gw: &Gateway, actor: &Actor) -> bool {
    match actor {
        Actor::Master => gw.settings().master_key.is_some(),
        Actor::Token { id } => gw.0.admin_tokens.is_live(id, now_ms()),
        Actor::Cli { .. } => false,
    }
}

/// The pages' layer: a live session or the sign-in page; on changes, the CSRF token, the
/// origin and the role.
pub(crate) async fn require(State(gw): State<Gateway>, req: Request, next: Next) -> Response {
    let Some(sessions) = req.extensions().get::<Arc<Sessions>>().cloned() else {
        return html::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "Something went wrong",
            "the dashboard's session table is missing",
        );
    };
    let presented = cookie(req.headers(), COOKIE);
    let found = presented
        .as_deref()
        .and_then(|id| sessions.get(id, Instant::now(), |a| actor_valid(&gw, a)));
    let Some(mut session) = found else {
        return to_sign_in(&req, presented.is_some());
    };
    session.address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut req = req;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let chrome = session.chrome();
        if !same_origin(req.headers()) {
            return html::error_page(
                StatusCode::FORBIDDEN,
                Some(&chrome),
                "Not allowed",
                "this form was sent from another site; changes are only accepted from the dashboard itself",
            );
        }
        let (parts, body) = req.into_parts();
        let bytes = match crate::http::body::read(
            body,
            MAX_FORM_BYTES,
            gw.settings().limits.body_read_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                return html::error_page(
                    status,
                    Some(&chrome),
                    html::status_title(status),
                    &e.message,
                );
            }
        };
        let form = Form::parse(&bytes);
        let token_ok = form
            .get("csrf")
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !token_ok {
            return html::error_page(
                StatusCode::FORBIDDEN,
                Some(&chrome),
                "Not allowed",
                "the form's CSRF token is missing or wrong (a form from an old session, or from another site): reload the page and try again",
            );
        }
        if parts.uri.path() != LOGOUT && !session.role.may(&parts.method) {
            return html::error_page(
                StatusCode::FORBIDDEN,
                Some(&chrome),
                "Not allowed",
                "a viewer may read but not change anything: sign in with the master key or an admin token to make changes",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
        req.extensions_mut().insert(form);
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// The sign-in page, remembering where the browser was going (for `GET`s), and clearing a
/// cookie that named no live session.
fn to_sign_in(req: &Request, had_cookie: bool) -> Response {
    let mut target = "/ui/login".to_string();
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        let here = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/ui/");
        if here != "/ui/" && here != "/ui" {
            target.push_str(&html::query(&[("next", here)]));
        }
    }
    if had_cookie {
        target.push_str(if target.contains('?') { "&" } else { "?" });
        target.push_str("expired=1");
    }
    let mut resp = html::redirect(&target);
    if had_cookie && let Ok(v) = set_cookie(None, over_tls(req.headers())).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_or_old_and_end_with_their_actor() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, opened) = s.open(Role::Viewer, Actor::Master, t0);
        assert_eq!(id.len(), 64, "256 bits of hex");
        assert_ne!(id, opened.csrf);
        let ok = |_: &Actor| true;
        assert!(s.get(&id, t0 + Duration::from_secs(60), ok).is_some());
        assert!(s.get("0000", t0, ok).is_none());
        // Idle: the last request was 8 h ago.
        let t1 = t0 + Duration::from_secs(60) + IDLE;
        assert!(s.get(&id, t1, ok).is_none());
        assert_eq!(s.len(), 0, "an ended session is removed");

        // Busy but old: ends at its lifetime.
        let (id, _) = s.open(Role::Admin, Actor::Master, t0);
        let mut t = t0;
        while t + IDLE / 2 < t0 + LIFETIME {
            t += IDLE / 2;
            assert!(s.get(&id, t, ok).is_some());
        }
        assert!(s.get(&id, t0 + LIFETIME, ok).is_none());

        // A revoked token ends its sessions.
        let actor = Actor::Token { id: "tok_1".into() };
        let (id, _) = s.open(Role::Admin, actor, t0);
        assert!(s.get(&id, t0, |_| false).is_none());
        assert!(s.get(&id, t0, ok).is_none(), "gone for good");

        let (id, _) = s.open(Role::Admin, Actor::Master, t0);
        s.close(&id);
        assert!(s.get(&id, t0, ok).is_none());
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_least_recently_used() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = s.open(Role::Viewer, Actor::Master, t0);
        let (second, _) = s.open(Role::Viewer, Actor::Master, t0 + Duration::from_millis(1));
        // Touch the first so the second is the least recently used.
        assert!(
            s.get(&first, t0 + Duration::from_millis(2), |_| true)
                .is_some()
        );
        for i in 2..MAX_SESSIONS {
            s.open(
                Role::Viewer,
                Actor::Master,
                t0 + Duration::from_millis(2 + i as u64),
            );
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        let later = t0 + Duration::from_secs(30);
        s.open(Role::Viewer, Actor::Master, later);
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get(&first, later, |_| true).is_some());
        assert!(s.get(&second, later, |_| true).is_none());
    }

    #[test]
    fn failed_sign_ins_are_limited_per_address_and_window() {
        let s = Sessions::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..LOGIN_FAILURES {
            assert!(s.sign_in_allowed(a, t0).is_ok());
            s.sign_in_failed(a, t0);
        }
        let wait = s
            .sign_in_allowed(a, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, LOGIN_WINDOW - Duration::from_secs(10));
        assert!(s.sign_in_allowed(b, t0).is_ok(), "per address");
        assert!(
            s.sign_in_allowed(a, t0 + LOGIN_WINDOW).is_ok(),
            "the window ends"
        );
        s.sign_in_failed(a, t0 + LOGIN_WINDOW);
        assert!(
            s.sign_in_allowed(a, t0 + LOGIN_WINDOW).is_ok(),
            "a new window"
        );
        s.sign_in_succeeded(a);
        assert!(s.failures.lock().unwrap().is_empty());
    }

    #[test]
    fn cookies_origins_and_next_targets() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tollgate_session=abc ; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(
            set_cookie(Some("x"), false),
            "tollgate_session=x; HttpOnly; SameSite=Strict; Path=/ui"
        );
        assert!(set_cookie(Some("x"), true).ends_with("; Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));

        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:4000".parse().unwrap());
        assert!(
            same_origin(&h),
            "no Origin header: a same-origin form in some browsers"
        );
        h.insert(header::ORIGIN, "http://127.0.0.1:4000".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));

        assert_eq!(
            safe_next(Some("/ui/requests?tenant=a")),
            "/ui/requests?tenant=a"
        );
        for bad in [
            "https://evil.example/ui/",
            "//evil.example",
            "/ui//x",
            "/admin/v1/keys",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn forms_parse_and_trim() {
        let f = Form::parse(b"csrf=abc&name=+x+&empty=&name=second");
        assert_eq!(f.get("csrf"), Some("abc"));
        assert_eq!(f.get("name"), Some("x"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.get("missing"), None);
    }
}
