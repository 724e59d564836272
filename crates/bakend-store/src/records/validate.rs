//! Field validation (spec `rest-api.md` §6). Checks that need no database run here, on the
//! request's thread; the database checks (`exists`, `owner`, `unique`) run in [`db_checks`] inside the
//! write's transaction, where no other write can race them.

use crate::sql::Value as Sql;
use crate::sql::{Backend, Conn, OptionalExtension};
use serde_json::{Map, Value};

use crate::collections::definition::{CollectionDef, FieldDef, FieldType};
use crate::collections::registry::Collection;
use crate::error::FieldError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every field is checked; missing ones are stored as NULL.
    Create,
    /// Only fields present in the body are checked and written.
    Update,
}

/// Values ready to store, by field index, and the failures found.
#[derive(Debug, Default)]
pub struct Validated {
    pub values: Vec<(usize, Sql)>,
    pub errors: Vec<(usize, FieldError)>,
}

impl Validated {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

pub fn validate(def: &CollectionDef, body: &Map<String, Value>, mode: Mode) -> Validated {
    let mut out = Validated::default();
    for (i, f) in def.fields.iter().enumerate() {
        let v = body.get(&f.name);
        if mode == Mode::Update && v.is_none() {
            continue;
        }
        // An absent field takes its default on create (an explicit null stays null).
        let v = match (mode, v) {
            (Mode::Create, None) => f.default.as_ref(),
            _ => v,
        };
        match check_value(f, v) {
            Ok(sql) => out.values.push((i, sql)),
            Err(errs) => out.errors.extend(errs.into_iter().map(|e| (i, e))),
        }
    }
    out
}

fn err(f: &FieldDef, rule: &'static str, message: String) -> FieldError {
    FieldError {
        field: f.name.clone(),
        rule,
        message,
    }
}

/// Checks one value (absent = `None`) against a field's type and rules, and gives the value to
/// store. Also used for definition defaults and for converting existing rows in a migration.
pub fn check_value(f: &FieldDef, v: Option<&Value>) -> Result<Sql, Vec<FieldError>> {
    let name = &f.name;
    let missing = matches!(v, None | Some(Value::Null)) || v.and_then(Value::as_str) == Some("");
    if f.required && missing {
        return Err(vec![err(
            f,
            "required",
            format!("Field \"{name}\" is required"),
        )]);
    }
    let v = match v {
        None | Some(Value::Null) => return Ok(Sql::Null),
        Some(v) => v,
    };
    let type_err = |what: &str| vec![err(f, "type", format!("Field \"{name}\" must be {what}"))];
    let sql = match f.kind {
        FieldType::String | FieldType::Text | FieldType::Relation | FieldType::File => {
            let s = v.as_str().ok_or_else(|| type_err("a string"))?;
            Sql::Text(s.to_string())
        }
        FieldType::Integer => {
            let n = v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|x| x.fract() == 0.0 && x.abs() < 9.2e18)
                        .map(|x| x as i64)
                })
                .ok_or_else(|| type_err("an integer"))?;
            Sql::Integer(n)
        }
        FieldType::Float => Sql::Real(v.as_f64().ok_or_else(|| type_err("a number"))?),
        FieldType::Boolean => {
            Sql::Integer(v.as_bool().ok_or_else(|| type_err("a boolean"))? as i64)
        }
        FieldType::Datetime => {
            let s = v
                .as_str()
                .and_then(bakend_core::time::normalize)
                .ok_or_else(|| type_err("a valid ISO-8601 datetime"))?;
            Sql::Text(s)
        }
        FieldType::Json => {
            if !(v.is_object() || v.is_array()) {
                return Err(type_err("a JSON value"));
            }
            Sql::Text(v.to_string())
        }
    };
    let mut errors = Vec::new();
    let measured = match &sql {
        // Characters are Unicode scalar values, as users count them: an emoji is one, not
        // two UTF-16 units (v1 counted those); "é" typed as e + combining accent is two.
        Sql::Text(s) if matches!(f.kind, FieldType::String | FieldType::Text) => {
            Some((s.chars().count() as f64, " characters"))
        }
        Sql::Integer(n) if f.kind == FieldType::Integer => Some((*n as f64, "")),
        Sql::Real(x) => Some((*x, "")),
        _ => None,
    };
    if let Some((m, unit)) = measured {
        if let Some(min) = f.min
            && m < min
        {
            errors.push(err(
                f,
                "min",
                format!("Field \"{name}\" must be at least {min}{unit}"),
            ));
        }
        if let Some(max) = f.max
            && m > max
        {
            errors.push(err(
                f,
                "max",
                format!("Field \"{name}\" must be at most {max}{unit}"),
            ));
        }
    }
    if let (Some(re), Sql::Text(s)) = (&f.regex, &sql)
        && !re.is_match(s)
    {
        errors.push(err(
            f,
            "regex",
            format!("Field \"{name}\" does not match required pattern"),
        ));
    }
    if errors.is_empty() {
        Ok(sql)
    } else {
        Err(errors)
    }
}

/// Which files the writer of a record may put in its `file` fields. Referencing a file never
/// changes the file's own access rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAccess {
    /// Any stored file (admins).
    Any,
    /// Only files uploaded by this user.
    OwnedBy(String),
    /// No stored file (anonymous writers own none).
    NoneOwned,
}

/// The checks that need the database: a `file` value must name a stored file the writer may
/// attach, a `unique` value must not be used by another record. `exclude_id` is the record
/// being updated. `in_write`: called inside the write that stores the values — on PostgreSQL
/// a referenced file's row is then locked against deletion until that write commits (another
/// server could delete it in between; SQLite's one writer cannot).
pub fn db_checks(
    conn: &Conn,
    c: &Collection,
    values: &[(usize, Sql)],
    exclude_id: Option<&str>,
    files: &FileAccess,
    in_write: bool,
) -> crate::sql::Result<Vec<(usize, FieldError)>> {
    let file_sql = match (conn.backend(), in_write) {
        (Backend::Postgres, true) => "SELECT user_id FROM _files WHERE id = ?1 FOR KEY SHARE",
        _ => "SELECT user_id FROM _files WHERE id = ?1",
    };
    let mut errors = Vec::new();
    for (i, v) in values {
        let f = &c.def.fields[*i];
        // SQLite stores the NUL character in text; PostgreSQL cannot. (JSON fields are stored
        // re-serialized, where it is escaped.)
        if conn.backend() == Backend::Postgres
            && let Sql::Text(s) = v
            && s.contains('\0')
        {
            errors.push((
                *i,
                err(
                    f,
                    "type",
                    format!("Field \"{}\" must not contain the NUL character", f.name),
                ),
            ));
            continue;
        }
        if f.kind == FieldType::File
            && let Sql::Text(id) = v
            && !id.is_empty()
        {
            let owner: Option<String> = conn
                .prepare_cached(file_sql)?
                .query_row([id], |r| r.get(0))
                .optional()?;
            let Some(owner) = owner else {
                errors.push((
                    *i,
                    err(
                        f,
                        "exists",
                        format!("Field \"{}\" references unknown file \"{id}\"", f.name),
                    ),
                ));
                continue;
            };
            let allowed = match files {
                FileAccess::Any => true,
                FileAccess::OwnedBy(u) => *u == owner,
                FileAccess::NoneOwned => false,
            };
            if !allowed {
                errors.push((
                    *i,
                    err(
                        f,
                        "owner",
                        format!("Field \"{}\" references a file you do not own", f.name),
                    ),
                ));
                continue;
            }
        }
        if f.unique && !matches!(v, Sql::Null) {
            let quote = crate::collections::schema::quote;
            let sql = format!(
                "SELECT 1 FROM {} WHERE {} = ?1 AND {} != ?2 LIMIT 1",
                c.sql.table,
                quote(&f.name),
                quote(crate::RecordLayout::ID.column)
            );
            let taken = conn
                .prepare_cached(&sql)?
                .query_row((v, exclude_id.unwrap_or("")), |_| Ok(()))
                .optional()?;
            if taken.is_some() {
                errors.push((*i, unique_error(f)));
            }
        }
    }
    Ok(errors)
}

pub fn unique_error(f: &FieldDef) -> FieldError {
    err(f, "unique", format!("Field \"{}\" must be unique", f.name))
}

/// All failures in definition order (a field's own failures keep their order).
pub fn in_field_order(mut errors: Vec<(usize, FieldError)>) -> Vec<FieldError> {
    errors.sort_by_key(|(i, _)| *i);
    errors.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collections::definition::parse;
    use serde_json::json;

    fn def() -> CollectionDef {
        parse(&json!({"name": "t", "fields": [
            {"name": "title", "type": "string", "required": true, "min": 2, "max": 5, "regex": "^[a-z]+$"},
            {"name": "count", "type": "integer", "max": 100},
            {"name": "score", "type": "float"},
            {"name": "done", "type": "boolean"},
            {"name": "meta", "type": "json"},
            {"name": "when", "type": "datetime"}
        ]}))
        .unwrap()
        .def
    }

    fn rules(body: Value, mode: Mode) -> Vec<(String, &'static str)> {
        let v = validate(&def(), body.as_object().unwrap(), mode);
        v.errors
            .into_iter()
            .map(|(_, e)| (e.field, e.rule))
            .collect()
    }

    #[test]
    fn each_rule_reports() {
        assert_eq!(
            rules(json!({}), Mode::Create),
            [("title".into(), "required")]
        );
        assert_eq!(
            rules(json!({"title": ""}), Mode::Create),
            [("title".into(), "required")]
        );
        assert_eq!(
            rules(json!({"title": 5}), Mode::Create),
            [("title".into(), "type")]
        );
        assert_eq!(
            rules(json!({"title": "ABCDEFG"}), Mode::Create),
            [("title".into(), "max"), ("title".into(), "regex")]
        );
        assert_eq!(
            rules(
                json!({"title": "ab", "count": 1.5, "score": "x", "done": 1, "meta": "s", "when": "nope"}),
                Mode::Create
            ),
            [
                ("count".into(), "type"),
                ("score".into(), "type"),
                ("done".into(), "type"),
                ("meta".into(), "type"),
                ("when".into(), "type")
            ]
        );
        assert_eq!(
            rules(json!({"title": "ab", "count": 101}), Mode::Create),
            [("count".into(), "max")]
        );
        assert!(
            rules(
                json!({"title": "ab", "count": 3.0, "meta": [1]}),
                Mode::Create
            )
            .is_empty()
        );
    }

    #[test]
    fn update_checks_only_present_fields() {
        assert!(rules(json!({"count": 4}), Mode::Update).is_empty());
        assert_eq!(
            rules(json!({"title": null}), Mode::Update),
            [("title".into(), "required")]
        );
    }

    #[test]
    fn messages_match_spec() {
        let v = validate(
            &def(),
            json!({"title": "a"}).as_object().unwrap(),
            Mode::Create,
        );
        assert_eq!(
            v.errors[0].1.message,
            "Field \"title\" must be at least 2 characters"
        );
        let v = validate(
            &def(),
            json!({"title": "ab", "count": 1000}).as_object().unwrap(),
            Mode::Create,
        );
        assert_eq!(v.errors[0].1.message, "Field \"count\" must be at most 100");
    }

    #[test]
    fn lengths_count_unicode_scalar_values() {
        let def = parse(&json!({"name": "t", "fields": [
            {"name": "s", "type": "string", "min": 2, "max": 4},
            {"name": "t", "type": "text", "max": 200}
        ]}))
        .unwrap()
        .def;
        let check = |s: &str, t: &str| -> Vec<(String, &'static str)> {
            let body = json!({"s": s, "t": t});
            validate(&def, body.as_object().unwrap(), Mode::Create)
                .errors
                .into_iter()
                .map(|(_, e)| (e.field, e.rule))
                .collect()
        };
        let emoji = "\u{1F600}"; // 1 scalar value, 2 UTF-16 units, 4 bytes
        assert!(check(&emoji.repeat(4), &emoji.repeat(200)).is_empty());
        assert_eq!(check(&emoji.repeat(5), ""), [("s".into(), "max")]);
        assert_eq!(
            check("x", &emoji.repeat(201)),
            [("s".into(), "min"), ("t".into(), "max")]
        );
        // Two scalar values: "e" + U+0301 (one glyph, "é"), and two emoji.
        assert!(check("e\u{301}", "").is_empty());
        assert!(check(&emoji.repeat(2), "").is_empty());
        // Precomposed "é" is one: below the minimum.
        assert_eq!(check("\u{E9}", ""), [("s".into(), "min")]);
        // A family emoji is 5 scalar values (3 people + 2 joiners).
        assert_eq!(
            check("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}", ""),
            [("s".into(), "max")]
        );
    }
}
