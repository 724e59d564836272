//! Mapping positions in the generated JavaScript back to the user's TypeScript, so errors and
//! stack traces name the `.ts` line the user wrote.

use std::collections::HashMap;

/// One module's mappings: `(generated line, generated column, source line, source column)`,
/// 0-based, sorted by generated position.
#[derive(Clone, Debug, Default)]
pub struct LineMap(Vec<(u32, u32, u32, u32)>);

impl LineMap {
    pub(crate) fn from_tokens(mut tokens: Vec<(u32, u32, u32, u32)>) -> LineMap {
        tokens.sort_unstable();
        LineMap(tokens)
    }

    /// The source position (1-based line and column) of a 1-based generated position: the
    /// closest mapping at or before it on the same generated line, else the line's first.
    pub fn lookup(&self, line: u32, column: u32) -> Option<(u32, u32)> {
        let (l, c) = (line.checked_sub(1)?, column.saturating_sub(1));
        let at = self.0.partition_point(|t| (t.0, t.1) <= (l, c));
        let before = at.checked_sub(1).map(|i| self.0[i]).filter(|t| t.0 == l);
        let after = self.0.get(at).copied().filter(|t| t.0 == l);
        before.or(after).map(|t| (t.2 + 1, t.3 + 1))
    }
}

/// The maps of every loaded module, by project-relative path.
#[derive(Debug, Default)]
pub struct SourceMaps(pub(crate) HashMap<String, LineMap>);

impl SourceMaps {
    /// Rewrites every `file:line:column` (and `file:line`) of a known module in a JS stack trace.
    pub fn map_stack(&self, stack: &str) -> String {
        let mut out = String::with_capacity(stack.len());
        for (i, line) in stack.lines().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&self.map_line(line));
        }
        out
    }

    fn map_line(&self, line: &str) -> String {
        for (file, map) in &self.0 {
            let Some(start) = line.find(file.as_str()) else {
                continue;
            };
            let rest = &line[start + file.len()..];
            let Some(pos) = rest.strip_prefix(':') else {
                continue;
            };
            let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
            let n1 = digits(pos);
            let Ok(l) = pos[..n1].parse::<u32>() else {
                continue;
            };
            let after_line = &pos[n1..];
            let (c, consumed) = match after_line.strip_prefix(':') {
                Some(cs) => {
                    let n2 = digits(cs);
                    (cs[..n2].parse::<u32>().unwrap_or(1), n1 + 1 + n2)
                }
                None => (1, n1),
            };
            let Some((sl, sc)) = map.lookup(l, c) else {
                continue;
            };
            let tail = &pos[consumed..];
            return format!("{}{file}:{sl}:{sc}{tail}", &line[..start]);
        }
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_frames_are_mapped_to_source_positions() {
        let mut maps = SourceMaps::default();
        maps.0.insert(
            "functions/a.ts".into(),
            LineMap::from_tokens(vec![(0, 0, 4, 0), (1, 2, 7, 6), (1, 10, 7, 20)]),
        );
        assert_eq!(
            maps.map_stack("Error: x\n    at h (functions/a.ts:2:12)\n    at <eval>"),
            "Error: x\n    at h (functions/a.ts:8:21)\n    at <eval>"
        );
        assert_eq!(
            maps.map_stack("at functions/a.ts:1"),
            "at functions/a.ts:5:1"
        );
        assert_eq!(maps.map_stack("at other.ts:1:1"), "at other.ts:1:1");
    }
}
