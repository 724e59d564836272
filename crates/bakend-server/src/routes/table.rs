//! The route table: which route serves a path, and the parts of the path it takes. It is the
//! one place routes are listed — [`super::dispatch`] serves what it returns and the metrics
//! middleware labels requests with [`Route::template`], so the two cannot drift apart.
//!
//! Paths are split on `/` with empty segments dropped, so `/api/posts/` and `//api//posts` are
//! the same route (spec `rest-api.md` §1).

/// Route prefixes owned by Bakend itself, never by a collection.
pub(crate) const SYSTEM_SEGMENTS: &[&str] = &["auth", "storage", "users", "admin", "realtime"];

/// The WebSocket endpoint; served by its own axum route (it upgrades the connection).
pub const REALTIME_PATH: &str = "/api/realtime";

/// The admin dashboard (`/_` redirects here); everything below it is the dashboard's.
pub const DASHBOARD_PATH: &str = "/_/";

/// A route: what serves a request, and its `route` label in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// No route: answered 404 (or 405 where v1 did, see `dispatch`).
    Other,
    Health,
    Metrics,
    Realtime,
    OpenApi,
    AuthRegister,
    AuthLogin,
    AuthRefresh,
    AuthLogout,
    AuthMe,
    StorageUpload,
    StorageFile,
    AdminCollections,
    AdminCollection,
    AdminUsers,
    AdminUser,
    AdminStorage,
    AdminFunctions,
    AdminJobs,
    AdminJobRuns,
    AdminJobRun,
    AdminLogs,
    AdminRealtime,
    Collection,
    Record,
    /// The admin dashboard's files (`/_`, `/_/…`), served while `dashboard.enabled`.
    Dashboard,
}

/// A classified path: the route and the path segments it takes as parameters (collection and
/// record id, a user or file id, a collection or job name), in path order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: Route,
    pub params: [&'a str; 2],
}

impl Route {
    pub const ALL: [Route; 26] = [
        Route::Other,
        Route::Health,
        Route::Metrics,
        Route::Realtime,
        Route::OpenApi,
        Route::AuthRegister,
        Route::AuthLogin,
        Route::AuthRefresh,
        Route::AuthLogout,
        Route::AuthMe,
        Route::StorageUpload,
        Route::StorageFile,
        Route::AdminCollections,
        Route::AdminCollection,
        Route::AdminUsers,
        Route::AdminUser,
        Route::AdminStorage,
        Route::AdminFunctions,
        Route::AdminJobs,
        Route::AdminJobRuns,
        Route::AdminJobRun,
        Route::AdminLogs,
        Route::AdminRealtime,
        Route::Collection,
        Route::Record,
        Route::Dashboard,
    ];

    pub fn template(self) -> &'static str {
        match self {
            Route::Other => "other",
            Route::Health => "/health",
            Route::Metrics => "/metrics",
            Route::Realtime => REALTIME_PATH,
            Route::OpenApi => "/api/openapi.json",
            Route::AuthRegister => "/api/auth/register",
            Route::AuthLogin => "/api/auth/login",
            Route::AuthRefresh => "/api/auth/refresh",
            Route::AuthLogout => "/api/auth/logout",
            Route::AuthMe => "/api/auth/me",
            Route::StorageUpload => "/api/storage/upload",
            Route::StorageFile => "/api/storage/:id",
            Route::AdminCollections => "/api/admin/collections",
            Route::AdminCollection => "/api/admin/collections/:name",
            Route::AdminUsers => "/api/admin/users",
            Route::AdminUser => "/api/admin/users/:id",
            Route::AdminStorage => "/api/admin/storage",
            Route::AdminFunctions => "/api/admin/functions",
            Route::AdminJobs => "/api/admin/jobs",
            Route::AdminJobRuns => "/api/admin/jobs/:name/runs",
            Route::AdminJobRun => "/api/admin/jobs/:name/run",
            Route::AdminLogs => "/api/admin/logs",
            Route::AdminRealtime => "/api/admin/realtime",
            Route::Collection => "/api/:collection",
            Route::Record => "/api/:collection/:id",
            Route::Dashboard => DASHBOARD_PATH,
        }
    }

    /// The route that serves `path`.
    pub fn of(path: &str) -> Route {
        classify(path).route
    }

    /// Admin routes check for an admin (or the local token) before anything else.
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Route::AdminCollections
                | Route::AdminCollection
                | Route::AdminUsers
                | Route::AdminUser
                | Route::AdminStorage
                | Route::AdminFunctions
                | Route::AdminJobs
                | Route::AdminJobRuns
                | Route::AdminJobRun
                | Route::AdminLogs
                | Route::AdminRealtime
        )
    }
}

/// Classifies `path`; paths no route serves are [`Route::Other`].
pub fn classify(path: &str) -> Matched<'_> {
    let route = |route| Matched {
        route,
        params: ["", ""],
    };
    let with = |route, a, b| Matched {
        route,
        params: [a, b],
    };
    match path {
        "/" | "/health" => return route(Route::Health),
        "/metrics" => return route(Route::Metrics),
        REALTIME_PATH => return route(Route::Realtime),
        _ if is_dashboard(path) => return route(Route::Dashboard),
        _ => {}
    }
    // Up to six segments matter (`/api/admin/collections/:name/<ignored>`); a longer path
    // matches no route.
    let mut seg = [""; 6];
    let mut n = 0;
    for s in path.split('/').filter(|s| !s.is_empty()) {
        if n == seg.len() {
            return route(Route::Other);
        }
        seg[n] = s;
        n += 1;
    }
    match seg[..n] {
        ["api", "openapi.json"] => route(Route::OpenApi),
        ["api", "auth", "me"] => route(Route::AuthMe),
        ["api", "auth", "register"] => route(Route::AuthRegister),
        ["api", "auth", "login"] => route(Route::AuthLogin),
        ["api", "auth", "refresh"] => route(Route::AuthRefresh),
        ["api", "auth", "logout"] => route(Route::AuthLogout),
        ["api", "storage", "upload"] => route(Route::StorageUpload),
        ["api", "storage", id] => with(Route::StorageFile, id, ""),
        ["api", "admin", "collections"] => route(Route::AdminCollections),
        // A further segment is ignored, as in v1.
        ["api", "admin", "collections", name] | ["api", "admin", "collections", name, _] => {
            with(Route::AdminCollection, name, "")
        }
        ["api", "admin", "users"] => route(Route::AdminUsers),
        ["api", "admin", "users", id] => with(Route::AdminUser, id, ""),
        ["api", "admin", "storage"] => route(Route::AdminStorage),
        ["api", "admin", "functions"] => route(Route::AdminFunctions),
        ["api", "admin", "jobs"] => route(Route::AdminJobs),
        ["api", "admin", "jobs", name, "runs"] => with(Route::AdminJobRuns, name, ""),
        ["api", "admin", "jobs", name, "run"] => with(Route::AdminJobRun, name, ""),
        ["api", "admin", "logs"] => route(Route::AdminLogs),
        ["api", "admin", "realtime"] => route(Route::AdminRealtime),
        ["api", system, ..] if SYSTEM_SEGMENTS.contains(&system) => route(Route::Other),
        ["api", collection] => with(Route::Collection, collection, ""),
        ["api", collection, id] => with(Route::Record, collection, id),
        _ => route(Route::Other),
    }
}

/// Whether `path` is the dashboard's: `/_` or anything below `/_/` (however deep: the
/// dashboard's own paths are client-side routes). `/_x` is not.
fn is_dashboard(path: &str) -> bool {
    path == "/_" || path.starts_with("/_/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(path: &str) -> &'static str {
        Route::of(path).template()
    }

    #[test]
    fn every_route_is_reachable() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Route::ALL is in declaration order");
        }
        let hits: std::collections::HashSet<&str> = [
            "/",
            "/metrics",
            "/api/realtime",
            "/api/openapi.json",
            "/api/auth/register",
            "/api/auth/login",
            "/api/auth/refresh",
            "/api/auth/logout",
            "/api/auth/me",
            "/api/storage/upload",
            "/api/storage/f1",
            "/api/admin/collections",
            "/api/admin/collections/posts",
            "/api/admin/users",
            "/api/admin/users/u1",
            "/api/admin/storage",
            "/api/admin/functions",
            "/api/admin/jobs",
            "/api/admin/jobs/daily/runs",
            "/api/admin/jobs/daily/run",
            "/api/admin/logs",
            "/api/admin/realtime",
            "/api/posts",
            "/api/posts/rec_1",
            "/_/",
            "/nope",
        ]
        .iter()
        .map(|p| template(p))
        .collect();
        assert_eq!(hits.len(), Route::ALL.len(), "{hits:?}");
    }

    #[test]
    fn parameters_are_the_named_segments() {
        let m = classify("//api//posts/rec_1/");
        assert_eq!((m.route, m.params), (Route::Record, ["posts", "rec_1"]));
        let m = classify("/api/admin/jobs/a%2Fb/runs");
        assert_eq!((m.route, m.params), (Route::AdminJobRuns, ["a%2Fb", ""]));
        let m = classify("/api/admin/collections/posts/x");
        assert_eq!((m.route, m.params), (Route::AdminCollection, ["posts", ""]));
        let m = classify("/api/storage/fil_1");
        assert_eq!((m.route, m.params), (Route::StorageFile, ["fil_1", ""]));
    }

    #[test]
    fn ids_and_names_never_become_labels() {
        assert_eq!(template("/api/posts"), "/api/:collection");
        assert_eq!(template("//api//posts/"), "/api/:collection");
        assert_eq!(template("/api/posts/rec_123"), "/api/:collection/:id");
        assert_eq!(template("/api/posts/rec_123/x"), "other");
        assert_eq!(template("/api/auth/whatever"), "other");
        assert_eq!(template("/api/users"), "other");
        assert_eq!(template("/api/admin"), "other");
        assert_eq!(template("/api/admin/secrets"), "other");
        assert_eq!(template("/api/admin/logs/1"), "other");
        assert_eq!(
            template("/api/admin/jobs/a%2Fb/runs"),
            "/api/admin/jobs/:name/runs"
        );
        assert_eq!(
            template("/api/admin/collections/posts/x"),
            "/api/admin/collections/:name"
        );
        assert_eq!(template("/api/realtime/"), "other");
        assert_eq!(template("/health"), "/health");
        assert_eq!(template("/a/b/c/d/e/f/g"), "other");
        assert_eq!(template(""), "other");
        assert_eq!(template("/_"), "/_/");
        assert_eq!(template("/_/collections/posts/rec_1/a/b/c"), "/_/");
        assert_eq!(template("/_x"), "other");
        assert_eq!(template("//_/"), "other");
    }
}
