//! Turning stored values into the wire shape of a record (spec `rest-api.md` §5):
//! `id`, `createdAt`, `updatedAt`, then every schema field in definition order.

use crate::sql::Value as Sql;
use serde_json::{Map, Number, Value};

use crate::collections::definition::FieldType;
use crate::collections::layout::RecordLayout;
use crate::collections::registry::Collection;

/// Largest integer a JSON client can hold exactly (2^53).
const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// One stored value as JSON for a field of type `kind`.
pub fn to_json(kind: FieldType, v: &Sql) -> Value {
    match (kind, v) {
        (_, Sql::Null) => Value::Null,
        (FieldType::Boolean, Sql::Integer(i)) => Value::Bool(*i != 0),
        (FieldType::Json, Sql::Text(t)) => {
            serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.clone()))
        }
        (_, Sql::Integer(i)) => Value::Number((*i).into()),
        (_, Sql::Real(f)) => float_json(*f),
        (_, Sql::Text(t)) => Value::String(t.clone()),
        (_, Sql::Blob(_)) => Value::Null,
    }
}

/// Integral floats print without a decimal point (`5`, not `5.0`), as v1 clients expect.
pub fn float_json(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < MAX_SAFE {
        Value::Number((f as i64).into())
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// A record from its stored columns in table order (see [`RecordLayout`]).
pub fn record_json(c: &Collection, cols: &[Sql]) -> Value {
    let mut m = Map::with_capacity(c.layout.width());
    for (i, s) in RecordLayout::SYSTEM.iter().enumerate() {
        let v = match cols.get(i) {
            Some(Sql::Text(t)) => Value::String(t.clone()),
            _ => Value::Null,
        };
        m.insert(s.json.into(), v);
    }
    for (i, f) in c.def.fields.iter().enumerate() {
        let v = cols
            .get(RecordLayout::field_column(i))
            .map(|v| to_json(f.kind, v))
            .unwrap_or(Value::Null);
        m.insert(f.name.clone(), v);
    }
    Value::Object(m)
}

/// Reads every column of a row selected with the collection's column list.
pub fn read_columns(c: &Collection, row: crate::sql::Row<'_>) -> crate::sql::Result<Vec<Sql>> {
    (0..c.layout.width()).map(|i| row.get::<Sql>(i)).collect()
}
