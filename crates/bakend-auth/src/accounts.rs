//! Accounts and sessions (spec `auth.md`): register, login, refresh with rotation and reuse
//! detection, logout (one session family or all), token checks, and the admin operations on
//! users. Writes go through the store's writer, so account events follow their commits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bakend_core::access::{Caller, Role};
use bakend_core::config::AuthConfig;
use bakend_core::{Event, EventSource, ids, time};
use bakend_store::sql::{Conn, OptionalExtension};
use bakend_store::{Committed, Database, StoreError};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::email::{normalize_email, normalize_new_email};
use crate::error::AuthError;
use crate::hashing::HashLimiter;
use crate::passwords;
use crate::ratelimit::RateLimiter;
use crate::tokens::{TokenKeys, Verified};

/// How long a looked-up user is trusted before it is read again. Changes made by this process
/// (role, deletion, sign-out everywhere) update the cache at once; this bounds staleness for
/// changes made by another process (the `bak admin` command).
const USER_CACHE_TTL: Duration = Duration::from_secs(5);
const USER_CACHE_MAX: usize = 100_000;
const MAX_PASSWORD_BYTES: usize = 1024;

/// What changed about a user, for holders of long-lived identities (realtime connections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserChange {
    RoleChanged {
        user_id: String,
        role: Role,
    },
    Deleted {
        user_id: String,
    },
    /// Every session was revoked (logout from everywhere).
    SessionsRevoked {
        user_id: String,
    },
}

impl UserChange {
    /// As told to the other servers on the database: `role <id> <role>`, `deleted <id>`,
    /// `revoked <id>`.
    pub fn to_message(&self) -> String {
        match self {
            UserChange::RoleChanged { user_id, role } => {
                format!("role {user_id} {}", role.as_str())
            }
            UserChange::Deleted { user_id } => format!("deleted {user_id}"),
            UserChange::SessionsRevoked { user_id } => format!("revoked {user_id}"),
        }
    }

    pub fn from_message(message: &str) -> Option<UserChange> {
        let mut parts = message.split(' ');
        let change = match (parts.next()?, parts.next()?.to_string()) {
            ("role", user_id) => UserChange::RoleChanged {
                user_id,
                role: Role::parse(parts.next()?)?,
            },
            ("deleted", user_id) => UserChange::Deleted { user_id },
            ("revoked", user_id) => UserChange::SessionsRevoked { user_id },
            _ => return None,
        };
        parts.next().is_none().then_some(change)
    }
}

/// Tells the other servers on the database (PostgreSQL) of `change` when the caller's
/// transaction commits, so they apply it at once rather than when their cache expires.
fn tell_peers(
    conn: &bakend_store::sql::Conn,
    peers: Option<&bakend_store::db::sequencer::Peers>,
    change: &UserChange,
) -> Result<(), StoreError> {
    if let Some(p) = peers {
        p.tell(conn, &change.to_message())?;
    }
    Ok(())
}

/// The answer to "who does this access token belong to?".
#[derive(Clone, Debug)]
pub enum TokenCheck {
    Valid { caller: Arc<Caller>, exp: u64 },
    Expired,
    Invalid,
}

/// The token response of register, login and refresh.
#[derive(Debug)]
pub struct TokenPair {
    pub token: String,
    pub refresh_token: String,
    pub user: Caller,
}

impl TokenPair {
    pub fn to_json(&self) -> Value {
        json!({ "token": self.token, "refreshToken": self.refresh_token, "user": safe_user(&self.user) })
    }
}

/// A user as the API shows it: `{id, email, role, createdAt}`, never the hash.
pub fn safe_user(c: &Caller) -> Value {
    json!({ "id": c.id, "email": c.email, "role": c.role.as_str(), "createdAt": c.created_at })
}

/// What `ensure_admin` did.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    Created(String),
    Promoted(String),
    AlreadyAdmin(String),
}

pub struct AuthService {
    db: Arc<Database>,
    keys: TokenKeys,
    access_ttl_secs: u64,
    refresh_ttl: Duration,
    admin_email: Option<String>,
    limiter: RateLimiter,
    /// Every password hash and verification runs through this bound.
    hashes: HashLimiter,
    cache: RwLock<HashMap<String, Cached>>,
    /// Bumped by every [`AuthService::forget`]. A lookup that read the database while a change
    /// was being forgotten may hold the old row; it compares this before and after and then
    /// does not cache what it read, so a forgotten row cannot come back for `USER_CACHE_TTL`.
    forgotten: AtomicU64,
    /// Verified against when the email is unknown, so that case costs what a wrong password
    /// costs and response times do not reveal which emails have accounts.
    dummy_hash: String,
    changes: broadcast::Sender<UserChange>,
}

/// A user's row as token checks need it: who they are and their current token generation.
#[derive(Clone, Debug)]
struct Account {
    caller: Caller,
    /// Access tokens carry the generation they were issued in; only the current one is accepted.
    /// Signing out everywhere increments it (column `_users.token_gen`).
    token_generation: u64,
}

struct Cached {
    caller: Arc<Caller>,
    token_generation: u64,
    at: Instant,
}

fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_refresh_token() -> String {
    let second = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{second}", ids::new_id("rt_"))
}

/// `{"email","password"}` from a request body, with the spec's messages.
pub fn credentials(body: &Map<String, Value>) -> Result<(String, String), AuthError> {
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(email), Some(password)) = (field("email"), field("password")) else {
        return Err(AuthError::BadRequest(
            "email and password are required".into(),
        ));
    };
    Ok((email.to_string(), password.to_string()))
}

fn check_new_password(password: &str) -> Result<(), AuthError> {
    // Characters are Unicode scalar values, as everywhere lengths are checked.
    if password.chars().count() < 8 {
        return Err(AuthError::BadRequest(
            "Password must be at least 8 characters".into(),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::BadRequest(format!(
            "Password must be at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The columns [`account_from_row`] reads, in its order.
const ACCOUNT_COLUMNS: &str = "id, email, role, created_at, token_gen";

fn account_from_row(r: bakend_store::sql::Row<'_>) -> bakend_store::sql::Result<Account> {
    Ok(Account {
        caller: caller_from_row(r)?,
        token_generation: r.get::<i64>(4)?.max(0) as u64,
    })
}

fn caller_from_row(r: bakend_store::sql::Row<'_>) -> bakend_store::sql::Result<Caller> {
    let role: String = r.get(2)?;
    Ok(Caller {
        id: r.get(0)?,
        email: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Authenticated),
        created_at: r.get(3)?,
    })
}

fn account_by_id(conn: &Conn, id: &str) -> bakend_store::sql::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM _users WHERE id = ?1"
    ))?
    .query_row([id], account_from_row)
    .optional()
}

fn user_by_id(conn: &Conn, id: &str) -> bakend_store::sql::Result<Option<Caller>> {
    Ok(account_by_id(conn, id)?.map(|a| a.caller))
}

fn admin_count(conn: &Conn) -> bakend_store::sql::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM _users WHERE role = 'admin'",
        (),
        |r| r.get(0),
    )
}

/// Inserts a session and returns its refresh token. `family` continues a rotation chain.
fn insert_session(
    conn: &Conn,
    user_id: &str,
    family: Option<&str>,
    ttl: Duration,
) -> bakend_store::sql::Result<String> {
    let token = new_refresh_token();
    let id = ids::new_id(ids::SESSION);
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(7));
    conn.prepare_cached(
        "INSERT INTO _sessions(id, user_id, refresh_token_hash, expires_at, created_at, family_id, rotated_at)
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, NULL)",
    )?
    .execute((
        &id,
        user_id,
        sha256_hex(&token),
        time::to_iso(expires),
        time::to_iso(now),
        family.unwrap_or(&id),
    ))?;
    Ok(token)
}

enum RefreshOutcome {
    Rotated(TokenPairParts),
    Reused { user_id: String, family: String },
    Rejected,
}

struct TokenPairParts {
    refresh_token: String,
    user: Caller,
    token_generation: u64,
}

impl AuthService {
    /// Builds the service; computes the timing dummy hash (tens of ms: call off the executor).
    pub fn new(
        db: Arc<Database>,
        secret: &str,
        cfg: &AuthConfig,
    ) -> Result<AuthService, AuthError> {
        let (changes, _) = broadcast::channel(1024);
        Ok(AuthService {
            db,
            keys: TokenKeys::new(secret),
            access_ttl_secs: cfg.access_token_ttl.as_secs(),
            refresh_ttl: cfg.refresh_token_ttl,
            admin_email: cfg.admin_email.clone(),
            limiter: RateLimiter::new(cfg.rate_limit_attempts, cfg.rate_limit_window),
            hashes: HashLimiter::new(
                cfg.max_concurrent_hashes,
                cfg.hash_queue,
                cfg.hash_queue_timeout,
            ),
            cache: RwLock::new(HashMap::new()),
            forgotten: AtomicU64::new(0),
            dummy_hash: passwords::hash("bakend-timing-equaliser")?,
            changes,
        })
    }

    pub fn subscribe_changes(&self) -> broadcast::Receiver<UserChange> {
        self.changes.subscribe()
    }

    /// A user change another server on the database made ([`UserChange::to_message`]): this
    /// server's cached user row goes, and its sockets learn of it as of its own changes.
    pub fn apply_peer_message(&self, message: &str) {
        let Some(change) = UserChange::from_message(message) else {
            tracing::warn!("Ignored a message from another server: {message:?}");
            return;
        };
        let (UserChange::RoleChanged { user_id, .. }
        | UserChange::Deleted { user_id }
        | UserChange::SessionsRevoked { user_id }) = &change;
        self.forget(user_id);
        let _ = self.changes.send(change);
    }

    /// Counts a login or register attempt from `ip`.
    pub fn check_rate(&self, ip: IpAddr) -> Result<(), AuthError> {
        self.limiter
            .check(ip)
            .map_err(|retry_after_secs| AuthError::RateLimited { retry_after_secs })
    }

    fn issue(&self, parts: TokenPairParts) -> Result<TokenPair, AuthError> {
        let token = self
            .keys
            .issue(
                &parts.user.id,
                parts.user.role.as_str(),
                parts.token_generation,
                self.access_ttl_secs,
            )
            .map_err(AuthError::Internal)?;
        Ok(TokenPair {
            token,
            refresh_token: parts.refresh_token,
            user: parts.user,
        })
    }

    pub async fn register(&self, email: &str, password: &str) -> Result<TokenPair, AuthError> {
        let email = normalize_new_email(email)?;
        check_new_password(password)?;
        // Taken before the lookup too: see `hashing` on why.
        let slot = self.hashes.slot().await?;
        let lookup = email.clone();
        let exists = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT 1 FROM _users WHERE email = ?1")?
                    .query_row([&lookup], |_| Ok(()))
                    .optional()?
                    .is_some())
            })
            .await?;
        if exists {
            return Err(AuthError::EmailTaken);
        }
        let password = password.to_string();
        let hash = slot.run(move || passwords::hash(&password)).await??;
        let role = if self.admin_email.as_deref() == Some(email.as_str()) {
            Role::Admin
        } else {
            Role::Authenticated
        };
        let ttl = self.refresh_ttl;
        let parts = self
            .db
            .write(move |conn| {
                let user = Caller {
                    id: ids::new_id(ids::USER),
                    email,
                    role,
                    created_at: time::now_iso(),
                };
                let inserted = conn.execute(
                    "INSERT INTO _users(id, email, password_hash, role, created_at) VALUES(?1, ?2, ?3, ?4, ?5)",
                    (&user.id, &user.email, &hash, role.as_str(), &user.created_at),
                );
                if let Err(e) = &inserted
                    && e.constraint().is_some()
                {
                    return Err(StoreError::BadRequest("Email is already registered".into()));
                }
                inserted?;
                let refresh_token = insert_session(conn, &user.id, None, ttl)?;
                let event = Event::new("auth.register", EventSource::Auth, safe_user(&user))
                    .about(Some(user.id.clone()));
                Ok(Committed::new(TokenPairParts { refresh_token, user, token_generation: 0 }).event(event))
            })
            .await
            .map_err(|e| match e {
                StoreError::BadRequest(_) => AuthError::EmailTaken,
                other => AuthError::Store(other),
            })?;
        tracing::debug!("User registered: {}", parts.user.id);
        self.issue(parts)
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair, AuthError> {
        let email = normalize_email(email)?;
        // Taken before the lookup too: see `hashing` on why.
        let slot = self.hashes.slot().await?;
        let found = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {ACCOUNT_COLUMNS}, password_hash FROM _users WHERE email = ?1",
                    ))?
                    .query_row([&email], |r| {
                        Ok((account_from_row(r)?, r.get::<String>(5)?))
                    })
                    .optional()?)
            })
            .await?;
        let stored = found
            .as_ref()
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let pw = password.to_string();
        // The legacy re-hash runs in the same slot as the verification: one slot, one hash at
        // a time.
        let (ok, upgrade) = slot
            .run(move || {
                let (ok, legacy) = passwords::verify(&pw, &stored);
                let upgrade = if ok && legacy {
                    passwords::hash(&pw).ok()
                } else {
                    None
                };
                (ok, upgrade)
            })
            .await?;
        let Some((account, _)) = found.filter(|_| ok) else {
            return Err(AuthError::InvalidCredentials);
        };
        let ttl = self.refresh_ttl;
        let parts = self
            .db
            .write(move |conn| {
                let user = account.caller;
                if let Some(h) = upgrade {
                    conn.execute(
                        "UPDATE _users SET password_hash = ?1 WHERE id = ?2",
                        (&h, &user.id),
                    )?;
                }
                // Read again inside the write: a sign-out everywhere that committed since the
                // lookup above must not leave this login with a token of the old generation.
                let token_generation = account_by_id(conn, &user.id)?
                    .map_or(account.token_generation, |a| a.token_generation);
                let refresh_token = insert_session(conn, &user.id, None, ttl)?;
                let event = Event::new("auth.login", EventSource::Auth, safe_user(&user))
                    .about(Some(user.id.clone()));
                Ok(Committed::new(TokenPairParts {
                    refresh_token,
                    user,
                    token_generation,
                })
                .event(event))
            })
            .await?;
        tracing::debug!("User logged in: {}", parts.user.id);
        self.issue(parts)
    }

    /// Rotates a refresh token. Presenting one that was already rotated means it leaked: the
    /// whole session family is revoked and the caller gets 401.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let hash = sha256_hex(refresh_token);
        let ttl = self.refresh_ttl;
        let outcome = self
            .db
            .write(move |conn| {
                let row = conn
                    .prepare_cached(
                        "SELECT id, user_id, family_id, expires_at, rotated_at FROM _sessions WHERE refresh_token_hash = ?1",
                    )?
                    .query_row([&hash], |r| {
                        Ok((
                            r.get::<String>(0)?,
                            r.get::<String>(1)?,
                            r.get::<Option<String>>(2)?,
                            r.get::<String>(3)?,
                            r.get::<Option<String>>(4)?,
                        ))
                    })
                    .optional()?;
                let Some((id, user_id, family, expires_at, rotated_at)) = row else {
                    return Ok(Committed::new(RefreshOutcome::Rejected));
                };
                let family = family.unwrap_or_else(|| id.clone());
                if rotated_at.is_some() {
                    conn.execute("DELETE FROM _sessions WHERE family_id = ?1", [&family])?;
                    return Ok(Committed::new(RefreshOutcome::Reused { user_id, family }));
                }
                let now = time::now_iso();
                let account = account_by_id(conn, &user_id)?;
                let (Some(Account { caller: user, token_generation }), true) = (account, expires_at > now) else {
                    conn.execute("DELETE FROM _sessions WHERE id = ?1", [&id])?;
                    return Ok(Committed::new(RefreshOutcome::Rejected));
                };
                conn.execute("UPDATE _sessions SET rotated_at = ?1 WHERE id = ?2", (&now, &id))?;
                let refresh_token = insert_session(conn, &user.id, Some(&family), ttl)?;
                Ok(Committed::new(RefreshOutcome::Rotated(TokenPairParts { refresh_token, user, token_generation })))
            })
            .await?;
        match outcome {
            RefreshOutcome::Rotated(parts) => self.issue(parts),
            RefreshOutcome::Reused { user_id, family } => {
                tracing::warn!(
                    "Refresh token reuse detected for user {user_id}: revoked session family {family}"
                );
                Err(AuthError::InvalidRefreshToken)
            }
            RefreshOutcome::Rejected => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// Ends the session family of `refresh_token`. Unknown tokens succeed silently.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AuthError> {
        let hash = sha256_hex(refresh_token);
        let user = self
            .db
            .write(move |conn| {
                let row = conn
                    .prepare_cached(
                        "SELECT user_id, family_id, expires_at FROM _sessions WHERE refresh_token_hash = ?1 AND rotated_at IS NULL",
                    )?
                    .query_row([&hash], |r| {
                        Ok((r.get::<String>(0)?, r.get::<Option<String>>(1)?, r.get::<String>(2)?))
                    })
                    .optional()?;
                let Some((user_id, family, expires_at)) = row else {
                    return Ok(Committed::new(None));
                };
                match family {
                    Some(f) => conn.execute("DELETE FROM _sessions WHERE family_id = ?1", [&f])?,
                    None => conn.execute("DELETE FROM _sessions WHERE refresh_token_hash = ?1", [&hash])?,
                };
                if expires_at <= time::now_iso() {
                    return Ok(Committed::new(None));
                }
                let event = Event::new("auth.logout", EventSource::Auth, json!({ "userId": user_id }))
                    .about(Some(user_id.clone()));
                Ok(Committed::new(Some(user_id)).event(event))
            })
            .await?;
        if let Some(id) = user {
            tracing::debug!("User logged out: {id}");
        }
        Ok(())
    }

    /// Revokes every session of `user_id` (logout from all devices): their refresh sessions are
    /// deleted and their token generation moves on, so every access token issued so far is
    /// refused from the moment this returns (REST, new sockets, the socket `auth` action).
    pub async fn logout_all(&self, user_id: &str) -> Result<(), AuthError> {
        let id = user_id.to_string();
        let changes = self.changes.clone();
        let peers = self.db.peers();
        self.db
            .write(move |conn| {
                conn.execute("DELETE FROM _sessions WHERE user_id = ?1", [&id])?;
                conn.execute(
                    "UPDATE _users SET token_gen = token_gen + 1 WHERE id = ?1",
                    [&id],
                )?;
                let event = Event::new("auth.logout", EventSource::Auth, json!({ "userId": id }))
                    .about(Some(id.clone()));
                let change = UserChange::SessionsRevoked {
                    user_id: id.clone(),
                };
                tell_peers(conn, peers.as_ref(), &change)?;
                Ok(Committed::new(()).event(event).then(move || {
                    let _ = changes.send(change);
                }))
            })
            .await?;
        self.forget(user_id);
        Ok(())
    }

    /// Checks an access token and finds its user (their current row, not the token's claims).
    /// A token of an earlier generation (the user signed out everywhere since) is invalid.
    pub async fn check_token(&self, token: &str) -> TokenCheck {
        match self.keys.verify(token) {
            Verified::Invalid => TokenCheck::Invalid,
            Verified::Expired { .. } => TokenCheck::Expired,
            Verified::Valid {
                user_id,
                exp,
                generation,
            } => match self.account(&user_id).await {
                Ok(Some((caller, current))) if current == generation => {
                    TokenCheck::Valid { caller, exp }
                }
                _ => TokenCheck::Invalid,
            },
        }
    }

    /// A user by id, from the cache when fresh.
    pub async fn user(&self, id: &str) -> Result<Option<Arc<Caller>>, AuthError> {
        Ok(self.account(id).await?.map(|(caller, _)| caller))
    }

    /// A user and their token generation, from the cache when fresh.
    async fn account(&self, id: &str) -> Result<Option<(Arc<Caller>, u64)>, AuthError> {
        // A poisoned cache reads as a miss; the write below clears it.
        if let Ok(cache) = self.cache.read()
            && let Some(c) = cache.get(id)
            && c.at.elapsed() < USER_CACHE_TTL
        {
            return Ok(Some((c.caller.clone(), c.token_generation)));
        }
        let forgotten_before = self.forgotten.load(Ordering::Acquire);
        let lookup = id.to_string();
        let found = self
            .db
            .read(move |conn| Ok(account_by_id(conn, &lookup)?))
            .await?;
        let found = found.map(|a| (Arc::new(a.caller), a.token_generation));
        let mut cache = self.cache_write();
        match &found {
            // Cached only if nothing was forgotten meanwhile: the row read may predate it.
            Some((caller, token_generation))
                if self.forgotten.load(Ordering::Acquire) == forgotten_before =>
            {
                if cache.len() >= USER_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(
                    id.to_string(),
                    Cached {
                        caller: caller.clone(),
                        token_generation: *token_generation,
                        at: Instant::now(),
                    },
                );
            }
            _ => {
                cache.remove(id);
            }
        }
        drop(cache);
        Ok(found)
    }

    /// Drops a changed user from the cache; called after the change has committed.
    fn forget(&self, id: &str) {
        let mut cache = self.cache_write();
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        cache.remove(id);
    }

    /// The cache for writing. A panic while it was held may have left it half-updated; it is
    /// only a cache, so it is emptied and used on.
    fn cache_write(&self) -> RwLockWriteGuard<'_, HashMap<String, Cached>> {
        self.cache.write().unwrap_or_else(|poisoned| {
            self.cache.clear_poison();
            let mut cache = poisoned.into_inner();
            cache.clear();
            cache
        })
    }

    /// Users newest first, and how many there are.
    pub async fn list_users(
        &self,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<Caller>, u64), AuthError> {
        Ok(self
            .db
            .read(move |conn| {
                let total: i64 = conn.query_row("SELECT COUNT(*) FROM _users", (), |r| r.get(0))?;
                let users = conn
                    .prepare_cached(
                        "SELECT id, email, role, created_at FROM _users ORDER BY created_at DESC, id DESC LIMIT ?1 OFFSET ?2",
                    )?
                    .query_map((limit as i64, offset as i64), caller_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((users, total.max(0) as u64))
            })
            .await?)
    }

    /// Changes a user's role. The last admin cannot be demoted.
    pub async fn set_role(&self, id: &str, role: Role) -> Result<Caller, AuthError> {
        let id = id.to_string();
        let peers = self.db.peers();
        let outcome = self
            .db
            .write(move |conn| {
                let Some(mut user) = user_by_id(conn, &id)? else {
                    return Ok(Committed::new(Err(AuthError::UserNotFound)));
                };
                if user.role == Role::Admin && role != Role::Admin && admin_count(conn)? <= 1 {
                    return Ok(Committed::new(Err(AuthError::LastAdmin(
                        "Cannot demote the last admin".into(),
                    ))));
                }
                conn.execute(
                    "UPDATE _users SET role = ?1 WHERE id = ?2",
                    (role.as_str(), &id),
                )?;
                let change = UserChange::RoleChanged {
                    user_id: id.clone(),
                    role,
                };
                tell_peers(conn, peers.as_ref(), &change)?;
                user.role = role;
                Ok(Committed::new(Ok(user)))
            })
            .await??;
        self.forget(&outcome.id);
        let _ = self.changes.send(UserChange::RoleChanged {
            user_id: outcome.id.clone(),
            role,
        });
        Ok(outcome)
    }

    /// Deletes a user and (by foreign key) their sessions. The last admin cannot be deleted.
    pub async fn delete_user(&self, id: &str) -> Result<(), AuthError> {
        let id = id.to_string();
        let target = id.clone();
        let peers = self.db.peers();
        self.db
            .write(move |conn| {
                let Some(user) = user_by_id(conn, &target)? else {
                    return Ok(Committed::new(Err(AuthError::UserNotFound)));
                };
                if user.role == Role::Admin && admin_count(conn)? <= 1 {
                    return Ok(Committed::new(Err(AuthError::LastAdmin(
                        "Cannot delete the last admin".into(),
                    ))));
                }
                conn.execute("DELETE FROM _users WHERE id = ?1", [&target])?;
                let change = UserChange::Deleted {
                    user_id: target.clone(),
                };
                tell_peers(conn, peers.as_ref(), &change)?;
                Ok(Committed::new(Ok(())))
            })
            .await??;
        self.forget(&id);
        let _ = self.changes.send(UserChange::Deleted { user_id: id });
        Ok(())
    }

    /// Makes `email` an admin: creates the account (with `password`) or promotes it.
    pub async fn ensure_admin(
        &self,
        email: &str,
        password: Option<&str>,
    ) -> Result<AdminOutcome, AuthError> {
        let email = normalize_email(email)?;
        let lookup = email.clone();
        let existing = self
            .db
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT id, email, role, created_at FROM _users WHERE email = ?1",
                    )?
                    .query_row([&lookup], caller_from_row)
                    .optional()?)
            })
            .await?;
        match existing {
            Some(u) if u.role == Role::Admin => Ok(AdminOutcome::AlreadyAdmin(u.id)),
            Some(u) => {
                self.set_role(&u.id, Role::Admin).await?;
                Ok(AdminOutcome::Promoted(u.id))
            }
            None => {
                let password = password.ok_or_else(|| {
                    AuthError::BadRequest("A password is required to create a new account".into())
                })?;
                // A new account: the look-alike rules apply (an existing one is promoted above
                // whatever its address).
                let email = normalize_new_email(&email)?;
                check_new_password(password)?;
                let pw = password.to_string();
                let hash = self.hashes.run(move || passwords::hash(&pw)).await??;
                let id = self
                    .db
                    .write(move |conn| {
                        let id = ids::new_id(ids::USER);
                        conn.execute(
                            "INSERT INTO _users(id, email, password_hash, role, created_at) VALUES(?1, ?2, ?3, 'admin', ?4)",
                            (&id, &email, &hash, time::now_iso()),
                        )?;
                        Ok(Committed::new(id))
                    })
                    .await?;
                Ok(AdminOutcome::Created(id))
            }
        }
    }

    /// Deletes expired sessions (including rotated ones kept for reuse detection).
    pub async fn purge_expired_sessions(&self) -> Result<usize, AuthError> {
        Ok(self
            .db
            .write(|conn| {
                let n = conn.execute(
                    "DELETE FROM _sessions WHERE expires_at <= ?1",
                    [time::now_iso()],
                )?;
                Ok(Committed::new(n))
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bakend_core::config::DatabaseLocation;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    fn config() -> AuthConfig {
        AuthConfig {
            jwt_secret: None,
            access_token_ttl: Duration::from_secs(60),
            refresh_token_ttl: Duration::from_secs(600),
            admin_email: None,
            rate_limit_attempts: 0,
            rate_limit_window: Duration::from_secs(60),
            max_concurrent_hashes: 2,
            hash_queue: 16,
            hash_queue_timeout: Duration::from_secs(5),
        }
    }

    fn service() -> AuthService {
        let db = Database::open(&DatabaseLocation::Memory, bakend_events::LocalBus::new()).unwrap();
        AuthService::new(Arc::new(db), "secret", &config()).unwrap()
    }

    /// A token as issued before generations existed: no `gen` claim.
    fn legacy_token(user_id: &str) -> String {
        let now = crate::tokens::now_secs();
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": user_id, "role": "authenticated", "iat": now, "exp": now + 60}),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap()
    }

    fn valid(check: TokenCheck) -> bool {
        matches!(check, TokenCheck::Valid { .. })
    }

    #[test]
    fn password_length_counts_unicode_scalar_values() {
        let emoji = "\u{1F511}"; // 2 UTF-16 units
        assert!(
            check_new_password(&emoji.repeat(4)).is_err(),
            "4 characters"
        );
        assert!(check_new_password(&emoji.repeat(7)).is_err());
        assert!(check_new_password(&emoji.repeat(8)).is_ok());
        assert!(
            check_new_password(&"e\u{301}".repeat(4)).is_ok(),
            "8 scalar values"
        );
        assert!(check_new_password(&"\u{E9}".repeat(7)).is_err());
    }

    #[tokio::test]
    async fn tokens_of_an_earlier_generation_are_refused() {
        let auth = service();
        let pair = auth.register("a@example.com", "password123").await.unwrap();
        let legacy = legacy_token(&pair.user.id);
        // Cached before the sign-out: the cache must not keep serving the old generation.
        assert!(valid(auth.check_token(&pair.token).await));
        assert!(
            valid(auth.check_token(&legacy).await),
            "upgrade keeps sessions"
        );

        auth.logout_all(&pair.user.id).await.unwrap();
        assert!(!valid(auth.check_token(&pair.token).await));
        assert!(!valid(auth.check_token(&legacy).await));
        let again = auth.login("a@example.com", "password123").await.unwrap();
        assert!(valid(auth.check_token(&again.token).await));
        let rotated = auth.refresh(&again.refresh_token).await.unwrap();
        assert!(valid(auth.check_token(&rotated.token).await));

        auth.logout_all(&pair.user.id).await.unwrap();
        assert!(!valid(auth.check_token(&again.token).await));
        assert!(!valid(auth.check_token(&rotated.token).await));
    }
}
