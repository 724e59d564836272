//! TypeScript → JavaScript with oxc: types are stripped, ES module syntax is kept.

use oxc_allocator::Allocator;
use oxc_codegen::{Codegen, CodegenOptions};
use oxc_parser::Parser;
use oxc_semantic::SemanticBuilder;
use oxc_span::SourceType;
use oxc_transformer::{TransformOptions, Transformer};

use crate::FunctionsError;
use crate::sourcemap::LineMap;

/// Transpiles one module. `file` is the project-relative path used in error messages.
pub fn transpile(file: &str, source: &str) -> Result<String, FunctionsError> {
    transpile_with_map(file, source).map(|(code, _)| code)
}

/// Like [`transpile`], also returning the map from generated to source positions.
pub fn transpile_with_map(file: &str, source: &str) -> Result<(String, LineMap), FunctionsError> {
    let alloc = Allocator::default();
    let source_type = SourceType::ts().with_module(true);
    let parsed = Parser::new(&alloc, source, source_type).parse();
    if let Some(d) = parsed.diagnostics.errors().next() {
        let offset = d.labels.first().map(|l| l.offset() as usize).unwrap_or(0);
        return Err(compile_error(file, source, offset, d.message.to_string()));
    }
    if parsed.panicked {
        return Err(compile_error(file, source, 0, "parser gave up".into()));
    }
    let mut program = parsed.program;
    let scoping = SemanticBuilder::new()
        .with_enum_eval(true)
        .build(&program)
        .semantic
        .into_scoping();
    let options = TransformOptions::default();
    let ret = Transformer::new(&alloc, std::path::Path::new(file), &options)
        .build_with_scoping(scoping, &mut program);
    if let Some(d) = ret.diagnostics.errors().next() {
        let offset = d.labels.first().map(|l| l.offset() as usize).unwrap_or(0);
        return Err(compile_error(file, source, offset, d.message.to_string()));
    }
    let out = Codegen::new()
        .with_options(CodegenOptions {
            source_map_path: Some(std::path::PathBuf::from(file)),
            ..CodegenOptions::default()
        })
        .build(&program);
    let map = out
        .map
        .map(|m| {
            LineMap::from_tokens(
                m.get_tokens()
                    .map(|t| {
                        (
                            t.get_dst_line(),
                            t.get_dst_col(),
                            t.get_src_line(),
                            t.get_src_col(),
                        )
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    Ok((out.code, map))
}

fn compile_error(file: &str, source: &str, offset: usize, message: String) -> FunctionsError {
    let (line, column) = line_col(source, offset);
    FunctionsError::Compile {
        kind: "function",
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_types_interfaces_and_generics() {
        let js = transpile(
            "functions/a.ts",
            "interface Post { title: string }\n\
             type Id = string;\n\
             function first<T>(xs: T[]): T | undefined { return xs[0]; }\n\
             export const n: number = first<number>([1, 2])!;\n\
             const p = { title: 'x' } as Post satisfies Post;\n\
             export default p;\n",
        )
        .unwrap();
        assert!(!js.contains("interface"), "{js}");
        assert!(!js.contains(": number"), "{js}");
        assert!(!js.contains("<T>"), "{js}");
        assert!(js.contains("export const n"), "{js}");
        assert!(js.contains("export default"), "{js}");
    }

    #[test]
    fn enums_become_javascript() {
        let js = transpile("functions/e.ts", "export enum Color { Red, Green = 5 }\n").unwrap();
        assert!(js.contains("Color"), "{js}");
        assert!(!js.contains("enum "), "{js}");
    }

    #[test]
    fn imports_are_kept_and_type_only_imports_dropped() {
        let js = transpile(
            "functions/a.ts",
            "import { onCreate } from 'bakend/functions';\nimport type { X } from './x.ts';\nonCreate('posts', (c: X) => {});\n",
        )
        .unwrap();
        assert!(js.contains("bakend/functions"), "{js}");
        assert!(!js.contains("./x.ts"), "{js}");
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let err = transpile("functions/bad.ts", "const a = 1;\nconst b = ;\n").unwrap_err();
        match err {
            FunctionsError::Compile { file, line, .. } => {
                assert_eq!(file, "functions/bad.ts");
                assert_eq!(line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
