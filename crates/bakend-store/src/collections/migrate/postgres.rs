//! A plan that rewrites rows, applied on PostgreSQL: where SQLite rebuilds the table
//! (`super::execute`), PostgreSQL's own `ALTER TABLE` changes it in place. The planner's
//! decisions, the conversion of each value ([`Mapper`]) and the blocking rows are the same;
//! only the statements differ:
//!
//! - a new field: `ADD COLUMN`, then its value (the default) written into the existing rows;
//! - a removed field: `DROP COLUMN`; a renamed one: `RENAME COLUMN`;
//! - a type change within one storage class (string → datetime, integer → boolean), a new
//!   rule, a field made required: the column stays and only the rows whose value changes are
//!   updated;
//! - integer → float: `ALTER COLUMN … TYPE DOUBLE PRECISION USING` the cast, which converts
//!   every value exactly as the mapper does;
//! - any other type change: the converted values go into a new column, the old one is
//!   dropped and the new one takes its name. SQL's casts do not convert as the mapper does
//!   (`1e+300` for `1e300`, JSON not re-serialized, datetimes not normalised, no check of the
//!   new rules), and the mapper is the one definition of a conversion on both stores;
//! - required or not: `SET` / `DROP NOT NULL`.
//!
//! No row is inserted or deleted, so the row count and its triggers stay as they are. Like
//! every `ALTER TABLE`, this holds the table's exclusive lock until the caller's transaction
//! commits: reads of that collection wait for the migration (on SQLite they go on reading the
//! old table meanwhile). A refused migration is undone by the caller's rollback.

use super::*;
use crate::collections::definition::Storage;

/// Where the new value of one field is written while the old rows are read.
enum Target {
    /// The column stays and keeps every value (it may be renamed afterwards).
    Keep,
    /// The column stays; rows whose converted value differs are updated.
    InPlace,
    /// `ALTER COLUMN … TYPE … USING` the cast, after the rows are read.
    Cast,
    /// A new column under a temporary name, renamed once the old one is dropped.
    Staged(String),
    /// A new field: its column is added first.
    New,
}

/// One field of the new definition and how it gets there.
struct Step<'a> {
    field: &'a FieldDef,
    /// Its position among the new fields.
    index: usize,
    /// The old field it comes from, and that field's position among the old fields.
    source: Option<(&'a FieldDef, usize)>,
    target: Target,
}

impl Step<'_> {
    /// The column the pass writes, if any.
    fn written_column(&self) -> Option<&str> {
        match (&self.target, self.source) {
            (Target::InPlace, Some((src, _))) => Some(&src.name),
            (Target::Staged(tmp), _) => Some(tmp),
            (Target::New, _) => Some(&self.field.name),
            _ => None,
        }
    }

    /// What the written column holds for `old_row` before the pass writes it.
    fn before(&self, old_row: &[Sql]) -> Sql {
        match (&self.target, self.source) {
            (Target::InPlace, Some((_, i))) => old_row[RecordLayout::field_column(i)].clone(),
            _ => Sql::Null,
        }
    }
}

fn steps<'a>(old: &'a CollectionDef, new: &'a CollectionDef, plan: &Plan) -> Vec<Step<'a>> {
    new.fields
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let source = plan.sources[index]
                .as_deref()
                .and_then(|s| old.fields.iter().enumerate().find(|(_, f)| f.name == s))
                .map(|(i, f)| (f, i));
            let target = match source {
                None => Target::New,
                Some((src, _)) if src.kind.storage() == field.kind.storage() => {
                    if plan.transform[index] {
                        Target::InPlace
                    } else {
                        Target::Keep
                    }
                }
                Some((src, _))
                    if src.kind == FieldType::Integer && field.kind == FieldType::Float =>
                {
                    Target::Cast
                }
                Some(_) => Target::Staged(format!("_bakend_new_{index}")),
            };
            Step {
                field,
                index,
                source,
                target,
            }
        })
        .collect()
}

pub(super) fn execute(
    conn: &Conn,
    old: &CollectionDef,
    new: &CollectionDef,
    plan: &Plan,
    force: bool,
) -> Result<Vec<Blocker>, StoreError> {
    let t = quote(&new.name);
    let steps = steps(old, new, plan);

    // New columns first: the pass below fills them from the old ones.
    let added: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let name = match &s.target {
                Target::New => &s.field.name,
                Target::Staged(tmp) => tmp,
                _ => return None,
            };
            let ty = s.field.kind.sql_type(Backend::Postgres);
            Some(format!("ADD COLUMN {} {ty}", quote(name)))
        })
        .collect();
    if !added.is_empty() {
        schema::run(conn, &format!("ALTER TABLE {t} {}", added.join(", ")))?;
    }

    let written: Vec<&Step<'_>> = steps
        .iter()
        .filter(|s| s.written_column().is_some())
        .collect();
    let mut updates = Updates::new(&new.name, &written);
    let mut mapper = Mapper::new(old, new, plan);
    each_old_row(conn, old, |old_row| {
        let new_row = mapper.map(conn, old_row)?;
        if mapper.problems.blocking(force) {
            // Certain to be refused: read on only to report every blocking row.
            updates.stop();
            return Ok(());
        }
        let value = |s: &Step<'_>| &new_row[RecordLayout::field_column(s.index)];
        if written.iter().any(|s| *value(s) != s.before(old_row)) {
            let id = old_row[RecordLayout::ID_COLUMN].clone();
            updates.push(conn, id, written.iter().map(|s| value(s).clone()))?;
        }
        Ok(())
    })?;
    updates.flush(conn)?;
    let mut problems = mapper.problems.0;
    decide(&new.name, problems.clone(), force)?;

    // Old columns out, the rest under their new names.
    let dropped: Vec<String> = plan
        .dropped
        .iter()
        .map(String::as_str)
        .chain(steps.iter().filter_map(|s| match (&s.target, s.source) {
            (Target::Staged(_), Some((src, _))) => Some(src.name.as_str()),
            _ => None,
        }))
        .map(|c| format!("DROP COLUMN {}", quote(c)))
        .collect();
    if !dropped.is_empty() {
        schema::run(conn, &format!("ALTER TABLE {t} {}", dropped.join(", ")))?;
    }
    for s in &steps {
        let from = match (&s.target, s.source) {
            (Target::Staged(tmp), _) => tmp.as_str(),
            (Target::New, _) | (_, None) => continue,
            (_, Some((src, _))) => src.name.as_str(),
        };
        if from != s.field.name {
            schema::run(
                conn,
                &format!(
                    "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                    quote(from),
                    quote(&s.field.name)
                ),
            )?;
        }
    }
    for s in steps.iter().filter(|s| matches!(s.target, Target::Cast)) {
        cast(conn, &t, s, &mapper.defaults[s.index])?;
    }
    not_null(conn, &t, &steps)?;

    problems.extend(plan.index_problems(conn, &new.name)?);
    decide(&new.name, problems.clone(), force)?;
    schema::sync_indexes(conn, new)?;
    Ok(problems)
}

/// Integer → float by PostgreSQL's cast, which rounds as Rust's `as f64` does: every value the
/// mapper would convert is that value. Only a null of a field that became required changes
/// otherwise, to the default (without one, the pass refused it).
fn cast(conn: &Conn, t: &str, s: &Step<'_>, default: &Option<Sql>) -> Result<(), StoreError> {
    let c = quote(&s.field.name);
    let ty = Storage::Real.pg_cast();
    schema::run(
        conn,
        &format!("ALTER TABLE {t} ALTER COLUMN {c} TYPE {ty} USING {c}::{ty}"),
    )?;
    if let (true, Some(d)) = (s.field.required, default) {
        conn.execute(&format!("UPDATE {t} SET {c} = ?1 WHERE {c} IS NULL"), [d])?;
    }
    Ok(())
}

/// `SET NOT NULL` where a field is now required and its column did not say so (PostgreSQL
/// checks every row: the pass filled them all), `DROP NOT NULL` where it no longer is.
fn not_null(conn: &Conn, t: &str, steps: &[Step<'_>]) -> Result<(), StoreError> {
    let actions: Vec<String> = steps
        .iter()
        .filter_map(|s| {
            let was = match (&s.target, s.source) {
                (Target::Keep | Target::InPlace | Target::Cast, Some((src, _))) => src.required,
                _ => false,
            };
            let c = quote(&s.field.name);
            match (was, s.field.required) {
                (false, true) => Some(format!("ALTER COLUMN {c} SET NOT NULL")),
                (true, false) => Some(format!("ALTER COLUMN {c} DROP NOT NULL")),
                _ => None,
            }
        })
        .collect();
    if !actions.is_empty() {
        schema::run(conn, &format!("ALTER TABLE {t} {}", actions.join(", ")))?;
    }
    Ok(())
}

/// Most parameters in one statement (PostgreSQL takes up to 65,535).
const MAX_PARAMS: usize = 30_000;
/// Most rows in one `UPDATE`.
const MAX_ROWS: usize = 500;

/// The pass's writes, several rows per statement:
/// `UPDATE t SET "a" = v.c0, … FROM (VALUES (?1::TEXT, ?2::BIGINT, …), …) AS v(id, c0, …)
/// WHERE t."id" = v.id`.
struct Updates {
    table: String,
    /// `(column, cast)` per written field.
    columns: Vec<(String, &'static str)>,
    /// Row by row: the id, then one value per column.
    pending: Vec<Sql>,
    rows: usize,
    per_statement: usize,
    stopped: bool,
}

impl Updates {
    fn new(table: &str, written: &[&Step<'_>]) -> Updates {
        let columns: Vec<(String, &'static str)> = written
            .iter()
            .filter_map(|s| {
                let col = s.written_column()?;
                Some((col.to_string(), s.field.kind.storage().pg_cast()))
            })
            .collect();
        Updates {
            table: table.to_string(),
            per_statement: (MAX_PARAMS / (columns.len() + 1)).clamp(1, MAX_ROWS),
            columns,
            pending: Vec::new(),
            rows: 0,
            stopped: false,
        }
    }

    /// Nothing more is written (the migration will be refused).
    fn stop(&mut self) {
        self.stopped = true;
        self.pending.clear();
        self.rows = 0;
    }

    fn push(
        &mut self,
        conn: &Conn,
        id: Sql,
        values: impl Iterator<Item = Sql>,
    ) -> Result<(), StoreError> {
        if self.stopped {
            return Ok(());
        }
        self.pending.push(id);
        self.pending.extend(values);
        self.rows += 1;
        if self.rows == self.per_statement {
            self.flush(conn)?;
        }
        Ok(())
    }

    fn flush(&mut self, conn: &Conn) -> Result<(), StoreError> {
        if self.stopped || self.rows == 0 {
            return Ok(());
        }
        let width = self.columns.len() + 1;
        let tuples: Vec<String> = (0..self.rows)
            .map(|r| {
                let mut cells = vec![format!("?{}::TEXT", r * width + 1)];
                for (k, (_, cast)) in self.columns.iter().enumerate() {
                    cells.push(format!("?{}::{cast}", r * width + k + 2));
                }
                format!("({})", cells.join(", "))
            })
            .collect();
        let sets: Vec<String> = self
            .columns
            .iter()
            .enumerate()
            .map(|(k, (col, _))| format!("{} = v.c{k}", quote(col)))
            .collect();
        let names: Vec<String> = (0..self.columns.len()).map(|k| format!("c{k}")).collect();
        let t = quote(&self.table);
        let id = quote(RecordLayout::ID.column);
        let sql = format!(
            "UPDATE {t} SET {} FROM (VALUES {}) AS v(id, {}) WHERE {t}.{id} = v.id",
            sets.join(", "),
            tuples.join(", "),
            names.join(", ")
        );
        conn.execute(&sql, crate::sql::params_from_iter(self.pending.iter()))?;
        self.pending.clear();
        self.rows = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
