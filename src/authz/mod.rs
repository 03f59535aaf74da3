//! Authorization: a pure function from (identity, request, roles) to a decision with a reason.

mod identity;

pub use identity::{GROUP_URI_PREFIX, IMPLICIT_GROUPS, Identity, IdentityError, Route, certificate_groups, identity_from_certificate};

use std::collections::BTreeMap;

use crate::crd::v1alpha1::{AccessRole, RuleSet, SubjectKind};

/// The database a request is for, as authorization sees it.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseRef<'a> {
    /// The namespace of the `Database` (AccessRoles only grant within their own namespace).
    pub namespace: &'a str,
    /// The `Database`'s name.
    pub name: &'a str,
    /// The `Database`'s labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// One access request: a database, the user to log in as, and the database name.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The target database.
    pub database: DatabaseRef<'a>,
    /// The database user (for DynamoDB/DocumentDB: the IAM role).
    pub db_user: &'a str,
    /// The database name; `None` where it is not known (yet): a MongoDB session before its
    /// first command, a MySQL login without a database, or DynamoDB, which has none. Then only
    /// what is known is checked: an `allow` needs no db name, and a `deny` refuses only when it
    /// covers every db name (its `dbNames` omitted or `*`). Each command that names a database
    /// is checked again with its name.
    pub db_name: Option<&'a str>,
}

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Access is allowed by the named roles.
    Allow {
        /// The AccessRoles (`namespace/name`) whose `allow` matched.
        roles: Vec<String>,
        /// Whether statements must be audited (true if any allowing role asks for it).
        audit_queries: bool,
    },
    /// Access is denied, with the reason.
    Deny(DenyReason),
}

/// Why access was denied. The `Display` text is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// No AccessRole in the database's namespace names the caller.
    #[error("no AccessRole in namespace {namespace:?} grants user {user:?} (groups {groups:?}) anything")]
    NoRoleForSubject { namespace: String, user: String, groups: Vec<String> },
    /// Roles name the caller, but none allows this combination.
    #[error(
        "AccessRole(s) {roles:?} apply to user {user:?} but none allows database {database:?} as db user {db_user:?}{}",
        db_name_suffix(.db_name)
    )]
    NotAllowed { roles: Vec<String>, user: String, database: String, db_user: String, db_name: Option<String> },
    /// An AccessRole's `deny` matched; deny always wins.
    #[error(
        "AccessRole {role:?} denies user {user:?} database {database:?} as db user {db_user:?}{}",
        db_name_suffix(.db_name)
    )]
    ExplicitlyDenied { role: String, user: String, database: String, db_user: String, db_name: Option<String> },
    /// The client certificate is limited to another route.
    #[error("your certificate is limited to {field} {allowed:?}, but {requested:?} was requested")]
    OutsideCertificateRoute { field: &'static str, allowed: String, requested: String },
}

fn db_name_suffix(db_name: &Option<String>) -> String {
    db_name.as_ref().map(|n| format!(" and db name {n:?}")).unwrap_or_default()
}

/// Decides whether `identity` may make `request`, given every AccessRole the proxy knows.
///
/// Default deny; a request is allowed when some role whose subjects match the caller allows it
/// and no role whose subjects match the caller denies it. Roles only apply to databases in
/// their own namespace.
pub fn authorize(identity: &Identity, request: &Request<'_>, roles: &[AccessRole]) -> Decision {
    if let Some(reason) = check_route(identity, request) {
        return Decision::Deny(reason);
    }
    let namespace = request.database.namespace;
    let applicable: Vec<&AccessRole> =
        roles.iter().filter(|r| r.metadata.namespace.as_deref().unwrap_or("default") == namespace).filter(|r| subjects_match(r, identity)).collect();
    if applicable.is_empty() {
        return Decision::Deny(DenyReason::NoRoleForSubject { namespace: namespace.to_owned(), user: identity.user.clone(), groups: identity.groups.clone() });
    }
    let owned = |s: &str| s.to_owned();
    if let Some(role) = applicable.iter().find(|r| r.spec.deny.as_ref().is_some_and(|d| rules_match(d, request, RuleKind::Deny))) {
        return Decision::Deny(DenyReason::ExplicitlyDenied {
            role: role_name(role),
            user: identity.user.clone(),
            database: request.database.name.to_owned(),
            db_user: request.db_user.to_owned(),
            db_name: request.db_name.map(owned),
        });
    }
    let allowing: Vec<&&AccessRole> = applicable.iter().filter(|r| r.spec.allow.as_ref().is_some_and(|a| rules_match(a, request, RuleKind::Allow))).collect();
    if allowing.is_empty() {
        return Decision::Deny(DenyReason::NotAllowed {
            roles: applicable.iter().map(|r| role_name(r)).collect(),
            user: identity.user.clone(),
            database: request.database.name.to_owned(),
            db_user: request.db_user.to_owned(),
            db_name: request.db_name.map(owned),
        });
    }
    Decision::Allow { roles: allowing.iter().map(|r| role_name(r)).collect(), audit_queries: allowing.iter().any(|r| r.spec.audit_queries()) }
}

/// The `allow` rule sets of every role in the database's namespace that match the database
/// itself (whoever the subjects are): what could ever be granted on it.
pub fn allow_rules_for<'a>(database: &DatabaseRef<'_>, roles: &'a [AccessRole]) -> Vec<&'a RuleSet> {
    roles
        .iter()
        .filter(|r| r.metadata.namespace.as_deref().unwrap_or("default") == database.namespace)
        .filter_map(|r| r.spec.allow.as_ref())
        .filter(|a| (a.database_selector.as_ref().is_some_and(|s| s.matches(database.labels))) || list_matches(&a.databases, database.name))
        .collect()
}

/// What a caller may use on one database, as `portcullis db ls` shows it: the db users and db
/// names its AccessRoles allow, and what their `deny` rules take away. `*` stands for any.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The allowing AccessRoles (`namespace/name`).
    pub roles: Vec<String>,
    /// The db users allowed (sorted; `*` for any).
    pub db_users: Vec<String>,
    /// The db names allowed (sorted; `*` for any).
    pub db_names: Vec<String>,
    /// What a `deny` rule excludes, in words (`db user postgres`, `db name payroll`, …).
    pub denied: Vec<String>,
}

/// The [`Grant`] of `identity` on `database`, or `None` when no AccessRole lets it reach the
/// database at all (none allows it, or a `deny` excludes the whole database or every user or
/// name). Evaluated with the same rules as [`authorize`].
pub fn grant(identity: &Identity, database: &DatabaseRef<'_>, roles: &[AccessRole]) -> Option<Grant> {
    let applicable: Vec<&AccessRole> =
        roles.iter().filter(|r| r.metadata.namespace.as_deref().unwrap_or("default") == database.namespace).filter(|r| subjects_match(r, identity)).collect();
    let matches_db = |rules: &RuleSet, omitted_matches: bool| {
        if rules.database_selector.is_none() && rules.databases.is_empty() {
            omitted_matches
        } else {
            rules.database_selector.as_ref().is_some_and(|s| s.matches(database.labels)) || list_matches(&rules.databases, database.name)
        }
    };
    let allowing: Vec<(&AccessRole, &RuleSet)> =
        applicable.iter().filter_map(|r| r.spec.allow.as_ref().filter(|a| matches_db(a, false)).map(|a| (*r, a))).collect();
    let union = |pick: fn(&RuleSet) -> &Vec<String>| {
        let mut all: Vec<String> = allowing.iter().flat_map(|(_, a)| pick(a).iter().cloned()).collect();
        all.sort();
        all.dedup();
        if all.iter().any(|v| v == "*") { vec!["*".to_owned()] } else { all }
    };
    let mut grant = Grant {
        roles: allowing.iter().map(|(r, _)| role_name(r)).collect(),
        db_users: union(|a| &a.db_users),
        db_names: union(|a| &a.db_names),
        denied: Vec::new(),
    };
    if grant.db_users.is_empty() {
        return None;
    }
    // Deny rules are shown only where they take away something the allow lists grant.
    let granted = |list: &[String], value: &String| list.iter().any(|v| v == "*" || v == value);
    for deny in applicable.iter().filter_map(|r| r.spec.deny.as_ref()).filter(|d| matches_db(d, true)) {
        let any = |list: &[String]| list.is_empty() || list.iter().any(|v| v == "*");
        match (any(&deny.db_users), any(&deny.db_names)) {
            (true, true) => return None,
            (false, true) => {
                grant.denied.extend(deny.db_users.iter().filter(|u| granted(&grant.db_users, u)).map(|u| format!("db user {u}")));
                grant.db_users.retain(|u| !deny.db_users.contains(u));
            }
            (true, false) => {
                grant.denied.extend(deny.db_names.iter().filter(|n| granted(&grant.db_names, n)).map(|n| format!("db name {n}")));
                grant.db_names.retain(|n| !deny.db_names.contains(n));
            }
            (false, false) => {
                for u in deny.db_users.iter().filter(|u| granted(&grant.db_users, u)) {
                    grant.denied.extend(deny.db_names.iter().filter(|n| granted(&grant.db_names, n)).map(|n| format!("db user {u} with db name {n}")));
                }
            }
        }
    }
    grant.denied.sort();
    grant.denied.dedup();
    if grant.db_users.is_empty() { None } else { Some(grant) }
}

/// `namespace/name` of a role.
pub fn role_name(role: &AccessRole) -> String {
    format!("{}/{}", role.metadata.namespace.as_deref().unwrap_or("default"), role.metadata.name.as_deref().unwrap_or(""))
}

fn check_route(identity: &Identity, request: &Request<'_>) -> Option<DenyReason> {
    let route = identity.route.as_ref()?;
    let mismatch = |field, allowed: &Option<String>, requested: Option<&str>| match (allowed, requested) {
        (Some(a), Some(r)) if a != r => Some(DenyReason::OutsideCertificateRoute { field, allowed: a.clone(), requested: r.to_owned() }),
        _ => None,
    };
    // A route names the database as `name` (standalone) or `namespace/name` (cluster mode).
    let qualified = format!("{}/{}", request.database.namespace, request.database.name);
    let database = match &route.database {
        Some(a) if a == &qualified || (!a.contains('/') && a == request.database.name) => None,
        Some(a) => Some(DenyReason::OutsideCertificateRoute { field: "database", allowed: a.clone(), requested: qualified }),
        None => None,
    };
    database.or_else(|| mismatch("db user", &route.db_user, Some(request.db_user))).or_else(|| mismatch("db name", &route.db_name, request.db_name))
}

/// Whether any subject of `role` is the caller.
pub fn subjects_match(role: &AccessRole, identity: &Identity) -> bool {
    let role_ns = role.metadata.namespace.as_deref().unwrap_or("default");
    role.spec.subjects.iter().any(|s| match s.kind {
        SubjectKind::User => s.name == identity.user,
        SubjectKind::Group => identity.groups.contains(&s.name),
        SubjectKind::ServiceAccount => {
            let ns = s.namespace.as_deref().unwrap_or(role_ns);
            identity.user == format!("system:serviceaccount:{ns}:{}", s.name)
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Allow,
    Deny,
}

/// Whether a rule set matches a request. In `allow`, an omitted dimension matches nothing; in
/// `deny`, it matches everything.
fn rules_match(rules: &RuleSet, request: &Request<'_>, kind: RuleKind) -> bool {
    let omitted_matches = kind == RuleKind::Deny;
    let db = request.database;
    let database_ok = if rules.database_selector.is_none() && rules.databases.is_empty() {
        omitted_matches
    } else {
        rules.database_selector.as_ref().is_some_and(|s| s.matches(db.labels)) || list_matches(&rules.databases, db.name)
    };
    let list_ok = |list: &[String], value: &str| if list.is_empty() { omitted_matches } else { list_matches(list, value) };
    let db_name_ok = match request.db_name {
        Some(name) => list_ok(&rules.db_names, name),
        // Not known yet: an allow is checked again when it is; a deny matches only if it
        // covers every name, so a deny of some names refuses exactly those, later.
        None => kind == RuleKind::Allow || rules.db_names.is_empty() || rules.db_names.iter().any(|n| n == "*"),
    };
    database_ok && list_ok(&rules.db_users, request.db_user) && db_name_ok
}

fn list_matches(list: &[String], value: &str) -> bool {
    list.iter().any(|item| item == "*" || item == value)
}

#[cfg(test)]
mod tests;
