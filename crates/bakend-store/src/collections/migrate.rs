//! Moving a collection's table from one definition to another (spec `collections.md` §4–5,
//! with the fixes `known-gaps.md` asks for).
//!
//! [`plan`] compares two definitions field by field and says what changes and how: cheap
//! `ALTER TABLE` statements where SQLite can make the change (new optional fields, renames,
//! indexes), or a rebuild of the table (new table, every row copied through [`Mapper`], old
//! table dropped, new one renamed) for what it cannot (a field becoming required, a type
//! change, a removed field). [`scan`] runs the same per-row mapping without writing, so
//! `bak migrate status` shows exactly which rows would block an `apply`. Everything runs
//! inside the caller's transaction: a refused or interrupted migration leaves nothing behind.
//!
//! The plan — what is allowed, what blocks, what `--force` does — is the same on both stores;
//! only the SQL that carries it out differs. On PostgreSQL a plan that rewrites rows
//! (`Plan::rebuild`) changes the table in place with PostgreSQL's own `ALTER TABLE`
//! (`migrate/postgres.rs`), every value still converted by [`Mapper`]; the cheap path is the
//! same SQL on both.
//!
//! Renames are never guessed: a field says `"renamedFrom": "old"`.

use std::collections::HashMap;
use std::fmt;

use crate::sql::Value as Sql;
use crate::sql::{Backend, Conn, OptionalExtension, Stmt};
use serde_json::Value;

use super::definition::{CollectionDef, FieldDef, FieldType};
use super::indexes::{self, IndexDef};
use super::layout::RecordLayout;
use super::schema::{self, quote};
use crate::error::StoreError;
use crate::records::row;
use crate::records::validate::check_value;

mod postgres;

/// How to get from one definition to another.
#[derive(Debug, Default)]
pub struct Plan {
    pub collection: String,
    /// What changes, one line per change, for people.
    pub changes: Vec<String>,
    /// Every row must be rewritten (a change SQLite's `ALTER TABLE` cannot make): SQLite
    /// rebuilds the table, PostgreSQL alters it in place and updates the rows.
    pub rebuild: bool,
    /// Per new field: the old column its values come from (`None` for a new field).
    sources: Vec<Option<String>>,
    /// Per new field: values go through conversion and the new rules.
    transform: Vec<bool>,
    /// Per new field: values must not repeat (checked before the unique index is created).
    unique_check: Vec<bool>,
    /// Old fields that are gone.
    dropped: Vec<String>,
    /// `(old, new)` column renames, for the `ALTER TABLE` path.
    renames: Vec<(String, String)>,
    /// New fields added with `ALTER TABLE … ADD COLUMN`.
    added: Vec<usize>,
    /// New unique indexes of the definition: existing rows must not repeat their values.
    unique_indexes: Vec<IndexDef>,
}

impl Plan {
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether existing rows must be looked at before the change can be made.
    fn needs_scan(&self) -> bool {
        self.rebuild || self.transform.iter().any(|t| *t) || self.unique_check.iter().any(|u| *u)
    }

    /// Rows repeating the values of a new unique index (read from `table`, which has the
    /// index's columns).
    fn index_problems(&self, conn: &Conn, table: &str) -> Result<Vec<Blocker>, StoreError> {
        let mut out = Vec::new();
        for ix in &self.unique_indexes {
            let (count, samples) = indexes::duplicates(conn, table, ix, SAMPLES)?;
            if count > 0 {
                out.push(Blocker {
                    field: format!("index {}", ix.describe()),
                    rule: "unique",
                    problem: "repeat values another record holds".into(),
                    force: None,
                    count,
                    samples,
                });
            }
        }
        Ok(out)
    }

    /// Whether the server may make this change by itself at start-up: no rebuild (which can
    /// take long and is worth a deliberate `bak migrate apply`).
    pub fn is_automatic(&self) -> bool {
        !self.rebuild
    }
}

fn describe_field(f: &FieldDef) -> String {
    let mut s = f.kind.as_str().to_string();
    if f.required {
        s.push_str(", required");
    }
    if f.unique {
        s.push_str(", unique");
    }
    if let Some(d) = &f.default {
        s.push_str(&format!(", default {d}"));
    }
    s
}

/// Compares `old` (the database) with `new` (a file or an API request) field by field.
pub fn plan(old: &CollectionDef, new: &CollectionDef) -> Plan {
    let mut p = Plan {
        collection: new.name.clone(),
        ..Plan::default()
    };
    let mut used: Vec<&str> = Vec::new();
    for (i, f) in new.fields.iter().enumerate() {
        let source = match old.field(&f.name) {
            Some(o) => Some(o),
            None => f
                .renamed_from
                .as_deref()
                .and_then(|r| old.field(r))
                .filter(|o| new.field(&o.name).is_none()),
        };
        let Some(o) = source else {
            p.changes
                .push(format!("add field \"{}\" ({})", f.name, describe_field(f)));
            p.sources.push(None);
            p.transform.push(false);
            // Existing rows get the default; a required field needs a value for each of them.
            let fills = f.default.is_some() || f.required;
            p.unique_check.push(f.unique && f.default.is_some());
            if fills {
                p.rebuild = true;
            } else {
                p.added.push(i);
            }
            continue;
        };
        used.push(&o.name);
        p.sources.push(Some(o.name.clone()));
        if o.name != f.name {
            p.changes
                .push(format!("rename field \"{}\" to \"{}\"", o.name, f.name));
            p.renames.push((o.name.clone(), f.name.clone()));
        }
        let mut transform = false;
        if o.kind != f.kind {
            p.changes.push(format!(
                "changes the type of field \"{}\" from {} to {}",
                f.name,
                o.kind.as_str(),
                f.kind.as_str()
            ));
            transform = true;
            p.rebuild = true;
        }
        if o.required != f.required {
            p.changes.push(if f.required {
                format!("makes field \"{}\" required", f.name)
            } else {
                format!("makes field \"{}\" optional", f.name)
            });
            transform |= f.required;
            p.rebuild = true;
        }
        if o.unique != f.unique {
            p.changes.push(if f.unique {
                format!("makes field \"{}\" unique", f.name)
            } else {
                format!("makes field \"{}\" no longer unique", f.name)
            });
        }
        p.unique_check
            .push(f.unique && (!o.unique || o.kind != f.kind));
        let rules_changed = o.min != f.min
            || o.max != f.max
            || o.regex.as_ref().map(|r| r.as_str()) != f.regex.as_ref().map(|r| r.as_str());
        if rules_changed {
            p.changes
                .push(format!("change validation of field \"{}\"", f.name));
            transform = true;
        }
        p.transform.push(transform);
        if o.collection != f.collection {
            p.changes
                .push(format!("change relation target of field \"{}\"", f.name));
        }
        if o.default != f.default {
            p.changes
                .push(format!("change default of field \"{}\"", f.name));
        }
    }
    for o in &old.fields {
        if !used.contains(&o.name.as_str()) {
            p.changes.push(format!(
                "removes field \"{}\" (its data would be lost)",
                o.name
            ));
            p.dropped.push(o.name.clone());
            p.rebuild = true;
        }
    }
    if old.permissions != new.permissions {
        p.changes.push("change permissions".into());
    }
    for ix in &new.indexes {
        if !old.indexes.contains(ix) {
            p.changes.push(format!("add index {}", ix.describe()));
            if ix.unique {
                p.unique_indexes.push(ix.clone());
            }
        }
    }
    for ix in &old.indexes {
        if !new.indexes.contains(ix) {
            p.changes.push(format!("drop index {}", ix.describe()));
        }
    }
    let old_order: Vec<&str> = p.sources.iter().flatten().map(String::as_str).collect();
    let kept_order: Vec<&str> = old
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| old_order.contains(n))
        .collect();
    if old_order != kept_order {
        p.changes.push("reorder fields".into());
    }
    p
}

/// One kind of problem some existing rows have with a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocker {
    pub field: String,
    /// `convert`, `required`, `min`/`max`/`regex` (as `rule`), `lost`, `unique`.
    pub rule: &'static str,
    /// What is wrong with these rows, e.g. `cannot be converted from string to integer`.
    pub problem: String,
    /// What `--force` does about it; `None` when forcing cannot help.
    pub force: Option<String>,
    pub count: u64,
    /// A few of the rows: `rec_… ("value")`.
    pub samples: Vec<String>,
}

const SAMPLES: usize = 5;

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What the rows break: a field, or a whole index (`index unique (a, b)`).
        let subject = if self.field.starts_with("index ") {
            self.field.clone()
        } else {
            format!("field \"{}\"", self.field)
        };
        write!(
            f,
            "{subject}: {} record(s) {}: {}",
            self.count,
            self.problem,
            self.samples.join(", ")
        )?;
        if self.count as usize > self.samples.len() {
            write!(f, ", …")?;
        }
        match &self.force {
            Some(what) => write!(f, " (with --force {what})"),
            None => write!(f, " (--force cannot help)"),
        }
    }
}

/// A migration some rows do not allow.
#[derive(Debug)]
pub struct Blocked {
    pub collection: String,
    pub blockers: Vec<Blocker>,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.blockers.iter().map(Blocker::to_string).collect();
        write!(
            f,
            "Collection \"{}\" cannot be migrated without losing or invalidating data: {}",
            self.collection,
            lines.join("; ")
        )
    }
}

#[derive(Default)]
struct Problems(Vec<Blocker>);

impl Problems {
    fn add(
        &mut self,
        field: &str,
        rule: &'static str,
        problem: String,
        force: Option<&str>,
        sample: String,
    ) {
        if let Some(b) = self
            .0
            .iter_mut()
            .find(|b| b.field == field && b.rule == rule && b.problem == problem)
        {
            b.count += 1;
            if b.samples.len() < SAMPLES {
                b.samples.push(sample);
            }
            return;
        }
        self.0.push(Blocker {
            field: field.to_string(),
            rule,
            problem,
            force: force.map(str::to_string),
            count: 1,
            samples: vec![sample],
        });
    }
}

fn sample(id: &str, v: &Value) -> String {
    let mut text = v.to_string();
    if text.chars().count() > 40 {
        text = text.chars().take(39).collect::<String>() + "…";
    }
    format!("{id} ({text})")
}

/// A JSON value of one field type reinterpreted for another, where that is unambiguous;
/// [`check_value`] then decides whether it is valid.
fn coerce(v: &Value, to: FieldType) -> Option<Value> {
    use FieldType::*;
    match (to, v) {
        (String | Text | Relation | File, Value::String(_)) => Some(v.clone()),
        (String | Text | Relation | File, Value::Number(n)) => Some(Value::String(n.to_string())),
        (String | Text, Value::Bool(b)) => Some(Value::String(b.to_string())),
        (String | Text, Value::Object(_) | Value::Array(_)) => Some(Value::String(v.to_string())),
        (Integer, Value::Number(_)) => Some(v.clone()),
        (Integer, Value::String(s)) => {
            let s = s.trim();
            s.parse::<i64>().ok().map(Value::from).or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
        }
        (Integer | Float, Value::Bool(b)) => Some(Value::from(*b as i64)),
        (Float, Value::Number(_)) => Some(v.clone()),
        (Float, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        (Boolean, Value::Bool(_)) => Some(v.clone()),
        (Boolean, Value::Number(n)) => match n.as_i64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => None,
        },
        (Boolean, Value::String(s)) => match s.trim() {
            "true" | "1" => Some(Value::Bool(true)),
            "false" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        (Datetime, Value::String(_)) => Some(v.clone()),
        (Json, Value::Object(_) | Value::Array(_)) => Some(v.clone()),
        (Json, Value::String(s)) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(|j| j.is_object() || j.is_array()),
        _ => None,
    }
}

/// Maps rows of the old table to values of the new one, recording what does not fit.
struct Mapper<'a> {
    old: &'a CollectionDef,
    new: &'a CollectionDef,
    plan: &'a Plan,
    /// Per new field: index of its source among the old fields.
    source_index: Vec<Option<usize>>,
    /// Per new field: the default as stored, if any.
    defaults: Vec<Option<Sql>>,
    /// Per new field that needs it: value → first record holding it.
    seen: HashMap<usize, HashMap<String, String>>,
    dropped_index: Vec<(String, usize)>,
    problems: Problems,
}

impl<'a> Mapper<'a> {
    fn new(old: &'a CollectionDef, new: &'a CollectionDef, plan: &'a Plan) -> Self {
        let field = |name: &str| old.fields.iter().position(|f| f.name == name);
        Mapper {
            old,
            new,
            plan,
            source_index: plan
                .sources
                .iter()
                .map(|s| s.as_deref().and_then(field))
                .collect(),
            defaults: new
                .fields
                .iter()
                .map(|f| {
                    f.default
                        .as_ref()
                        .and_then(|d| check_value(f, Some(d)).ok())
                })
                .collect(),
            seen: HashMap::new(),
            dropped_index: plan
                .dropped
                .iter()
                .filter_map(|d| field(d).map(|i| (d.clone(), RecordLayout::field_column(i))))
                .collect(),
            problems: Problems::default(),
        }
    }

    /// The new row (system columns, then the new fields; see [`RecordLayout`]) for an old one.
    fn map(&mut self, conn: &Conn, old_row: &[Sql]) -> Result<Vec<Sql>, StoreError> {
        let id = match &old_row[RecordLayout::ID_COLUMN] {
            Sql::Text(t) => t.clone(),
            _ => String::new(),
        };
        let system = RecordLayout::SYSTEM.len();
        let mut out = Vec::with_capacity(RecordLayout::of(self.new).width());
        out.extend_from_slice(&old_row[..system]);
        for (i, f) in self.new.fields.iter().enumerate() {
            let v = match self.source_index[i] {
                None => match &self.defaults[i] {
                    Some(d) => d.clone(),
                    None if f.required => {
                        self.problems.add(
                            &f.name,
                            "required",
                            "have no value for the new required field (give it a \"default\")"
                                .into(),
                            None,
                            id.clone(),
                        );
                        Sql::Null
                    }
                    None => Sql::Null,
                },
                Some(src) => {
                    let old = &old_row[RecordLayout::field_column(src)];
                    if self.plan.transform[i] {
                        let old_kind = self.old.fields[src].kind;
                        self.transform(conn, i, old_kind, old, &id)?
                    } else {
                        old.clone()
                    }
                }
            };
            if self.plan.unique_check[i] && v != Sql::Null {
                let key = format!("{v:?}");
                let seen = self.seen.entry(i).or_default();
                match seen.get(&key) {
                    Some(first) => self.problems.add(
                        &f.name,
                        "unique",
                        "repeat a value another record holds".into(),
                        None,
                        format!("{id} (same as {first})"),
                    ),
                    None => {
                        seen.insert(key, id.clone());
                    }
                }
            }
            out.push(v);
        }
        for (name, idx) in &self.dropped_index {
            let v = &old_row[*idx];
            if *v != Sql::Null {
                let kind = self
                    .old
                    .field(name)
                    .map(|f| f.kind)
                    .unwrap_or(FieldType::Text);
                self.problems.add(
                    name,
                    "lost",
                    "hold data in the removed field".into(),
                    Some("the data is dropped"),
                    sample(&id, &row::to_json(kind, v)),
                );
            }
        }
        Ok(out)
    }

    fn transform(
        &mut self,
        conn: &Conn,
        i: usize,
        old_kind: FieldType,
        v: &Sql,
        id: &str,
    ) -> Result<Sql, StoreError> {
        let f = &self.new.fields[i];
        let json = row::to_json(old_kind, v);
        let default = self.defaults[i].clone();
        let missing = |me: &mut Self| -> Sql {
            match &default {
                Some(d) => d.clone(),
                None => {
                    me.problems.add(
                        &f.name,
                        "required",
                        "have no value for the required field (give it a \"default\")".into(),
                        None,
                        id.to_string(),
                    );
                    Sql::Null
                }
            }
        };
        if json.is_null() {
            return Ok(if f.required { missing(self) } else { Sql::Null });
        }
        // A value that does not convert is replaced by the default (or null) under --force.
        let replace_with = match (&default, f.required) {
            (Some(_), _) => Some("they get the default"),
            (None, false) => Some("they become null"),
            (None, true) => None,
        };
        let problem = format!(
            "cannot be converted from {} to {}",
            old_kind.as_str(),
            f.kind.as_str()
        );
        let coerced = if old_kind == f.kind {
            Some(json.clone())
        } else {
            coerce(&json, f.kind)
        };
        let Some(c) = coerced else {
            self.problems
                .add(&f.name, "convert", problem, replace_with, sample(id, &json));
            return Ok(default.unwrap_or(Sql::Null));
        };
        match check_value(f, Some(&c)) {
            Ok(sql) => {
                if f.kind == FieldType::File
                    && old_kind != FieldType::File
                    && let Sql::Text(file_id) = &sql
                    && !file_exists(conn, file_id)?
                {
                    self.problems.add(
                        &f.name,
                        "convert",
                        "do not name a stored file".into(),
                        replace_with,
                        sample(id, &json),
                    );
                    return Ok(default.unwrap_or(Sql::Null));
                }
                Ok(sql)
            }
            Err(errs) if errs.iter().any(|e| e.rule == "type") => {
                self.problems
                    .add(&f.name, "convert", problem, replace_with, sample(id, &json));
                Ok(default.unwrap_or(Sql::Null))
            }
            Err(errs) if errs.iter().any(|e| e.rule == "required") => Ok(missing(self)),
            Err(errs) => {
                // min/max/regex: the value stays as it is under --force.
                let rule = errs[0].rule;
                self.problems.add(
                    &f.name,
                    rule,
                    format!("break the new rule: {}", errs[0].message),
                    Some("they are kept as they are"),
                    sample(id, &json),
                );
                let relaxed = FieldDef {
                    min: None,
                    max: None,
                    regex: None,
                    ..f.clone()
                };
                Ok(check_value(&relaxed, Some(&c)).unwrap_or(Sql::Null))
            }
        }
    }
}

fn file_exists(conn: &Conn, id: &str) -> crate::sql::Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM _files WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The `SELECT` that reads the old table in the order [`Mapper::map`] expects, with `rest`
/// (a condition, a limit) between the table and the order.
fn select_sql(old: &CollectionDef, rest: &str) -> String {
    format!(
        "SELECT {} FROM {}{rest} ORDER BY {}, {}",
        RecordLayout::column_list(old),
        quote(&old.name),
        quote(RecordLayout::CREATED_AT.column),
        quote(RecordLayout::ID.column)
    )
}

/// Rows read per statement on PostgreSQL, whose driver holds a whole result in memory.
const PG_PAGE: i64 = 1000;

/// Hands every row of the old table to `f`, in the mapper's order. PostgreSQL reads it in
/// pages, each starting after the last row of the one before, so a migration of millions of
/// rows holds one page at a time.
fn each_old_row(
    conn: &Conn,
    old: &CollectionDef,
    mut f: impl FnMut(&[Sql]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let width = RecordLayout::of(old).width();
    let read = |r: crate::sql::Row<'_>| -> crate::sql::Result<Vec<Sql>> {
        (0..width).map(|i| r.get(i)).collect()
    };
    if conn.backend() == Backend::Sqlite {
        let mut stmt = conn.prepare(&select_sql(old, ""))?;
        let mut rows = stmt.query(())?;
        while let Some(r) = rows.next()? {
            f(&read(r)?)?;
        }
        return Ok(());
    }
    let after = format!(
        " WHERE ({}, {}) > (?1, ?2)",
        quote(RecordLayout::CREATED_AT.column),
        quote(RecordLayout::ID.column)
    );
    let first = format!("{} LIMIT ?1", select_sql(old, ""));
    let next = format!("{} LIMIT ?3", select_sql(old, &after));
    let mut last: Option<(Sql, Sql)> = None;
    loop {
        let page = match &last {
            None => conn
                .prepare(&first)?
                .query_map([PG_PAGE], read)?
                .collect::<crate::sql::Result<Vec<_>>>(),
            Some((created, id)) => conn
                .prepare(&next)?
                .query_map((created, id, PG_PAGE), read)?
                .collect(),
        }?;
        for row in &page {
            f(row)?;
        }
        match page.last() {
            Some(row) if page.len() as i64 == PG_PAGE => {
                last = Some((
                    row[RecordLayout::CREATED_AT_COLUMN].clone(),
                    row[RecordLayout::ID_COLUMN].clone(),
                ));
            }
            _ => return Ok(()),
        }
    }
}

impl Problems {
    /// Whether the migration is certain to be refused (with `force`, by a problem forcing
    /// cannot help).
    fn blocking(&self, force: bool) -> bool {
        self.0.iter().any(|b| !force || b.force.is_none())
    }
}

/// Runs every row of the old table through the mapping; with `sink`, inserts the new rows
/// until a problem makes the migration certain to be refused (then only scans on, to report
/// every blocking row).
fn run_rows(
    conn: &Conn,
    mapper: &mut Mapper<'_>,
    mut sink: Option<&mut Stmt<'_>>,
    force: bool,
) -> Result<(), StoreError> {
    each_old_row(conn, mapper.old, |old_row| {
        let new_row = mapper.map(conn, old_row)?;
        if mapper.problems.blocking(force) {
            sink = None;
        }
        if let Some(insert) = sink.as_deref_mut() {
            insert.execute(crate::sql::params_from_iter(new_row.iter()))?;
        }
        Ok(())
    })
}

/// What existing rows would stop `plan` (read-only; for `bak migrate status`).
pub fn scan(
    conn: &Conn,
    old: &CollectionDef,
    new: &CollectionDef,
    plan: &Plan,
) -> Result<Vec<Blocker>, StoreError> {
    let mut problems = if plan.needs_scan() {
        let mut mapper = Mapper::new(old, new, plan);
        run_rows(conn, &mut mapper, None, false)?;
        mapper.problems.0
    } else {
        Vec::new()
    };
    // A new unique index over columns the table has now is checked on its rows; one that
    // needs new or converted columns is checked when `apply` has made them.
    if plan.rebuild {
        return Ok(problems);
    }
    let checkable = Plan {
        unique_indexes: plan
            .unique_indexes
            .iter()
            .filter(|ix| ix.uses_only(&old.fields))
            .cloned()
            .collect(),
        ..Plan::default()
    };
    problems.extend(checkable.index_problems(conn, &old.name)?);
    Ok(problems)
}

fn decide(collection: &str, blockers: Vec<Blocker>, force: bool) -> Result<(), StoreError> {
    let blocking: Vec<Blocker> = blockers
        .into_iter()
        .filter(|b| !force || b.force.is_none())
        .collect();
    if blocking.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Blocked(Blocked {
            collection: collection.to_string(),
            blockers: blocking,
        }))
    }
}

/// Applies `plan` inside the caller's transaction. Refuses (changing nothing the caller's
/// rollback does not undo) when rows block it, unless `force` and every blocker can be forced.
/// Returns the problems that were forced through.
pub fn execute(
    conn: &Conn,
    old: &CollectionDef,
    new: &CollectionDef,
    plan: &Plan,
    force: bool,
) -> Result<Vec<Blocker>, StoreError> {
    let backend = conn.backend();
    schema::check_names(backend, new)?;
    if plan.rebuild && backend == Backend::Postgres {
        // PostgreSQL changes the table in place (see `postgres`); statements prepared on
        // this connection may now re-plan to other result types.
        let outcome = postgres::execute(conn, old, new, plan, force);
        schema::forget_statements(conn);
        return outcome;
    }
    if plan.rebuild {
        let temp = format!("_bakend_rebuild_{}", new.name);
        conn.execute(&schema::table_sql(&temp, new, backend), ())?;
        let mut insert = conn.prepare(&format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(&temp),
            RecordLayout::column_list(new),
            RecordLayout::of(new).placeholders()
        ))?;
        let mut mapper = Mapper::new(old, new, plan);
        run_rows(conn, &mut mapper, Some(&mut insert), force)?;
        drop(insert);
        let mut problems = mapper.problems.0;
        problems.extend(plan.index_problems(conn, &temp)?);
        decide(&new.name, problems.clone(), force)?;
        conn.execute(&format!("DROP TABLE {}", quote(&old.name)), ())?;
        conn.execute(
            &format!(
                "ALTER TABLE {} RENAME TO {}",
                quote(&temp),
                quote(&new.name)
            ),
            (),
        )?;
        schema::sync_indexes(conn, new)?;
        // The copy went into a table without the count triggers.
        super::counts::sync(conn, &new.name)?;
        return Ok(problems);
    }
    let problems = scan(conn, old, new, plan)?;
    decide(&new.name, problems.clone(), force)?;
    let t = quote(&new.name);
    for (from, to) in &plan.renames {
        schema::run(
            conn,
            &format!(
                "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                quote(from),
                quote(to)
            ),
        )?;
    }
    for i in &plan.added {
        schema::run(
            conn,
            &schema::add_column_sql(&new.name, &new.fields[*i], backend),
        )?;
    }
    let index_problems = plan.index_problems(conn, &new.name)?;
    decide(&new.name, index_problems, force)?;
    schema::sync_indexes(conn, new)?;
    schema::forget_statements(conn);
    Ok(problems)
}

#[cfg(test)]
mod tests {
    //! The planner on both stores: each test runs on SQLite and, when a server is given, on
    //! PostgreSQL, where a plan that SQLite applies by rebuilding the table runs as `ALTER`s.

    use super::*;
    use crate::collections::definition::parse;
    use crate::collections::testing::{each_store, in_transaction};
    use serde_json::json;

    pub(super) fn def(v: Value) -> CollectionDef {
        parse(&v).unwrap().def
    }

    /// The collection's table holding `rows` (field values as JSON; ids `rec_0`, `rec_1`, …
    /// created in that order), and a stored file `fil_1`.
    pub(super) fn fill(conn: &Conn, def: &CollectionDef, rows: &[Value]) {
        conn.execute_batch(
            "INSERT INTO _files (id, filename, mime_type, size, visibility, user_id, created_at)
             VALUES ('fil_1', 'a.txt', 'text/plain', 1, 'public', 'u', 'x')",
        )
        .unwrap();
        schema::create(conn, def).unwrap();
        for (n, r) in rows.iter().enumerate() {
            let mut cols = vec![
                "\"id\"".to_string(),
                "\"created_at\"".into(),
                "\"updated_at\"".into(),
            ];
            let mut vals: Vec<Sql> = vec![
                Sql::Text(format!("rec_{n}")),
                Sql::Text(format!("2026-01-01T00:00:{n:02}.000Z")),
                Sql::Text("x".into()),
            ];
            for (k, v) in r.as_object().unwrap() {
                cols.push(quote(k));
                let f = def.field(k).unwrap();
                vals.push(check_value(f, Some(v)).unwrap());
            }
            let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            conn.execute(
                &format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote(&def.name),
                    cols.join(","),
                    marks.join(",")
                ),
                crate::sql::params_from_iter(vals.iter()),
            )
            .unwrap();
        }
    }

    pub(super) fn column(conn: &Conn, table: &str, col: &str) -> Vec<Sql> {
        conn.prepare(&format!(
            "SELECT {} FROM {} ORDER BY id",
            quote(col),
            quote(table)
        ))
        .unwrap()
        .query_map((), |r| r.get(0))
        .unwrap()
        .collect::<crate::sql::Result<_>>()
        .unwrap()
    }

    /// `execute` in a transaction of its own, as every caller runs it.
    pub(super) fn apply(
        conn: &Conn,
        old: &CollectionDef,
        new: &CollectionDef,
        force: bool,
    ) -> Result<Vec<Blocker>, StoreError> {
        let p = plan(old, new);
        in_transaction(conn, || execute(conn, old, new, &p, force))
    }

    #[test]
    fn adding_an_optional_field_is_an_alter() {
        each_store("adding_an_optional_field_is_an_alter", |conn| {
            let old = def(json!({"name": "p", "fields": [{"name": "a", "type": "string"}]}));
            let new = def(
                json!({"name": "p", "fields": [{"name": "a", "type": "string"}, {"name": "b", "type": "string", "unique": true}], "permissions": {"read": "admin"}}),
            );
            let p = plan(&old, &new);
            assert!(!p.rebuild);
            assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
            fill(conn, &old, &[json!({"a": "x"}), json!({"a": "y"})]);
            apply(conn, &old, &new, false).unwrap();
            assert_eq!(column(conn, "p", "b"), [Sql::Null, Sql::Null]);
        });
    }

    #[test]
    fn type_change_converts_and_blocks_what_does_not_convert() {
        each_store(
            "type_change_converts_and_blocks_what_does_not_convert",
            |conn| {
                let old = def(json!({"name": "p", "fields": [{"name": "n", "type": "string"}]}));
                let new = def(json!({"name": "p", "fields": [{"name": "n", "type": "integer"}]}));
                let p = plan(&old, &new);
                assert!(p.rebuild);
                fill(
                    conn,
                    &old,
                    &[json!({"n": "12"}), json!({"n": "abc"}), json!({})],
                );
                let blockers = scan(conn, &old, &new, &p).unwrap();
                assert_eq!(blockers.len(), 1);
                assert_eq!(blockers[0].count, 1);
                assert!(
                    blockers[0].samples[0].starts_with("rec_1"),
                    "{:?}",
                    blockers
                );
                let err = apply(conn, &old, &new, false).unwrap_err();
                assert!(
                    err.to_string()
                        .contains("cannot be converted from string to integer"),
                    "{err}"
                );
                assert_eq!(
                    column(conn, "p", "n"),
                    [Sql::Text("12".into()), Sql::Text("abc".into()), Sql::Null],
                    "refused: nothing changed"
                );
                apply(conn, &old, &new, true).unwrap();
                assert_eq!(
                    column(conn, "p", "n"),
                    [Sql::Integer(12), Sql::Null, Sql::Null]
                );
            },
        );
    }

    #[test]
    fn required_needs_a_default_and_duplicates_block_unique() {
        each_store(
            "required_needs_a_default_and_duplicates_block_unique",
            |conn| {
                let old = def(json!({"name": "p", "fields": [{"name": "a", "type": "string"}]}));
                let new = def(
                    json!({"name": "p", "fields": [{"name": "a", "type": "string", "required": true, "unique": true, "default": "z"}]}),
                );
                let p = plan(&old, &new);
                fill(
                    conn,
                    &old,
                    &[json!({"a": "x"}), json!({}), json!({"a": "x"})],
                );
                let blockers = scan(conn, &old, &new, &p).unwrap();
                assert_eq!(blockers.len(), 1, "{blockers:?}");
                assert_eq!(blockers[0].rule, "unique");
                assert!(blockers[0].force.is_none());
                assert!(apply(conn, &old, &new, true).is_err());
            },
        );
    }

    #[test]
    fn renames_are_explicit_and_keep_data() {
        each_store("renames_are_explicit_and_keep_data", |conn| {
            let old = def(
                json!({"name": "p", "fields": [{"name": "a", "type": "relation", "collection": "users"}]}),
            );
            let new = def(
                json!({"name": "p", "fields": [{"name": "b", "type": "relation", "collection": "users", "renamedFrom": "a"}]}),
            );
            let p = plan(&old, &new);
            assert!(!p.rebuild, "{:?}", p.changes);
            fill(conn, &old, &[json!({"a": "usr_1"})]);
            apply(conn, &old, &new, false).unwrap();
            assert_eq!(column(conn, "p", "b"), [Sql::Text("usr_1".into())]);
            let mut indexes = schema::index_names(conn, "p").unwrap();
            indexes.sort();
            assert_eq!(
                indexes,
                ["idx_p_b", "idx_p_created"],
                "one index, under the new name"
            );
            // Without renamedFrom the same change is a removal plus an addition.
            let guessed = def(
                json!({"name": "p", "fields": [{"name": "b", "type": "relation", "collection": "users"}]}),
            );
            assert!(plan(&old, &guessed).rebuild);
        });
    }

    #[test]
    fn removing_a_field_with_data_needs_force() {
        each_store("removing_a_field_with_data_needs_force", |conn| {
            let old = def(
                json!({"name": "p", "fields": [{"name": "a", "type": "string", "unique": true}, {"name": "b", "type": "integer"}]}),
            );
            let new = def(json!({"name": "p", "fields": [{"name": "b", "type": "integer"}]}));
            let p = plan(&old, &new);
            fill(conn, &old, &[json!({"a": "x", "b": 1}), json!({"b": 2})]);
            let blockers = scan(conn, &old, &new, &p).unwrap();
            assert_eq!(blockers[0].rule, "lost");
            assert_eq!(blockers[0].count, 1);
            assert!(apply(conn, &old, &new, false).is_err());
            apply(conn, &old, &new, true).unwrap();
            assert_eq!(column(conn, "p", "b"), [Sql::Integer(1), Sql::Integer(2)]);
        });
    }

    #[test]
    fn a_required_field_that_does_not_convert_is_refused_even_with_force() {
        each_store(
            "a_required_field_that_does_not_convert_is_refused_even_with_force",
            |conn| {
                let old = def(
                    json!({"name": "p", "fields": [{"name": "a", "type": "string", "required": true}]}),
                );
                let new = def(
                    json!({"name": "p", "fields": [{"name": "a", "type": "integer", "required": true}]}),
                );
                fill(conn, &old, &[json!({"a": "x"}), json!({"a": "2"})]);
                for force in [false, true] {
                    let err = apply(conn, &old, &new, force).unwrap_err();
                    assert!(matches!(err, StoreError::Blocked(_)), "{err}");
                }
                assert_eq!(
                    column(conn, "p", "a"),
                    [Sql::Text("x".into()), Sql::Text("2".into())]
                );
            },
        );
    }

    #[test]
    fn coercions() {
        assert_eq!(coerce(&json!("5"), FieldType::Integer), Some(json!(5)));
        assert_eq!(coerce(&json!(5), FieldType::String), Some(json!("5")));
        assert_eq!(coerce(&json!(true), FieldType::Text), Some(json!("true")));
        assert_eq!(coerce(&json!("1"), FieldType::Boolean), Some(json!(true)));
        assert_eq!(
            coerce(&json!("{\"a\":1}"), FieldType::Json),
            Some(json!({"a": 1}))
        );
        assert_eq!(coerce(&json!("x"), FieldType::Float), None);
        assert_eq!(coerce(&json!(2), FieldType::Boolean), None);
    }
}
