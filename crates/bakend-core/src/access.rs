//! The vocabulary of access control, shared by the record store (which stores rules) and the
//! permission decision in `bakend-auth` (which applies them).

use std::sync::Arc;

/// The field that holds a record's owner (a user id) when a collection has one. The record
/// store decides which fields qualify (`bakend_store::RecordLayout`); the name is here so every
/// crate that reads an owner off a record spells it the same way.
pub const OWNER_FIELD: &str = "user_id";

/// A collection permission rule (spec `rest-api.md` §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    Public,
    Authenticated,
    Owner,
    Admin,
}

impl Rule {
    pub const NAMES: &'static str = "public, authenticated, owner, admin";

    pub fn parse(s: &str) -> Option<Rule> {
        match s {
            "public" => Some(Rule::Public),
            "authenticated" => Some(Rule::Authenticated),
            "owner" => Some(Rule::Owner),
            "admin" => Some(Rule::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Public => "public",
            Rule::Authenticated => "authenticated",
            Rule::Owner => "owner",
            Rule::Admin => "admin",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    List,
    Create,
    Read,
    Update,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Authenticated,
    Public,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "authenticated" => Some(Role::Authenticated),
            "public" => Some(Role::Public),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Authenticated => "authenticated",
            Role::Public => "public",
        }
    }
}

/// A signed-in user as seen by a request: the database row, not the token's claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub created_at: String,
}

/// Who is making a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AuthContext {
    #[default]
    Anonymous,
    User(Arc<Caller>),
}

impl AuthContext {
    pub fn user(&self) -> Option<&Caller> {
        match self {
            AuthContext::Anonymous => None,
            AuthContext::User(c) => Some(c),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user().is_some_and(|u| u.role == Role::Admin)
    }

    /// The origin stamped on events of writes this caller makes directly.
    pub fn origin(&self) -> crate::Origin {
        crate::Origin {
            actor: match self {
                AuthContext::Anonymous => None,
                AuthContext::User(c) => Some(c.clone()),
            },
            depth: 0,
        }
    }
}
