//! What bindgen computed, read back from its output: struct members and their types, type
//! aliases, and the byte offsets and sizes of its layout assertions
//! (`["Offset of field: T::f"][offset_of!(T, f) - N]`, `["Size of T"][size_of::<T>() - N]`).
//! Member paths such as `PyInterpreterState.ceval.gil` are resolved here by following the
//! member types through nested and anonymous structs.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use syn::{Expr, ExprLit, Fields, Item, Lit, Stmt, Type};

/// One struct or union as bindgen wrote it.
#[derive(Debug, Default)]
struct Record {
    /// Member name → the named type it embeds by value (`None` for pointers, arrays, scalars
    /// that are not records; those cannot be followed further).
    members: Vec<(String, Option<String>)>,
}

/// The layout facts of one bindgen run.
#[derive(Debug, Default)]
pub struct Model {
    records: HashMap<String, Record>,
    aliases: HashMap<String, String>,
    offsets: HashMap<(String, String), u64>,
    sizes: HashMap<String, u64>,
}

impl Model {
    /// Reads bindgen's generated Rust source.
    pub fn parse(source: &str) -> Result<Model> {
        let file = syn::parse_file(source).context("parsing bindgen output")?;
        let mut model = Model::default();
        for item in &file.items {
            match item {
                Item::Struct(s) => {
                    let members = match &s.fields {
                        Fields::Named(named) => named
                            .named
                            .iter()
                            .filter_map(|f| f.ident.as_ref().map(|i| (i, &f.ty)))
                            .map(|(i, ty)| (unraw(&i.to_string()), by_value_type(ty)))
                            .collect(),
                        _ => Vec::new(),
                    };
                    model
                        .records
                        .insert(s.ident.to_string(), Record { members });
                }
                Item::Union(u) => {
                    let members = u
                        .fields
                        .named
                        .iter()
                        .filter_map(|f| f.ident.as_ref().map(|i| (i, &f.ty)))
                        .map(|(i, ty)| (unraw(&i.to_string()), by_value_type(ty)))
                        .collect();
                    model
                        .records
                        .insert(u.ident.to_string(), Record { members });
                }
                Item::Type(t) => {
                    if let Some(target) = by_value_type(&t.ty) {
                        model.aliases.insert(t.ident.to_string(), target);
                    }
                }
                Item::Const(c) if c.ident == "_" => {
                    if let Expr::Block(block) = c.expr.as_ref() {
                        for stmt in &block.block.stmts {
                            model.read_assertion(stmt);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(model)
    }

    /// Records one `["label"][expr - N]` layout assertion.
    fn read_assertion(&mut self, stmt: &Stmt) {
        let expr = match stmt {
            Stmt::Expr(e, _) => e,
            _ => return,
        };
        let Expr::Index(index) = expr else { return };
        let Expr::Array(label) = index.expr.as_ref() else {
            return;
        };
        let Some(Expr::Lit(ExprLit {
            lit: Lit::Str(label),
            ..
        })) = label.elems.first()
        else {
            return;
        };
        let Expr::Binary(bin) = index.index.as_ref() else {
            return;
        };
        let Expr::Lit(ExprLit {
            lit: Lit::Int(n), ..
        }) = bin.right.as_ref()
        else {
            return;
        };
        let Ok(n) = n.base10_parse::<u64>() else {
            return;
        };
        let label = label.value();
        if let Some(rest) = label.strip_prefix("Offset of field: ") {
            if let Some((ty, field)) = rest.split_once("::") {
                self.offsets.insert((ty.to_string(), unraw(field)), n);
            }
        } else if let Some(ty) = label.strip_prefix("Size of ") {
            self.sizes.insert(ty.to_string(), n);
        }
    }

    /// Follows typedefs to the struct or union they name.
    fn record_name<'a>(&'a self, mut name: &'a str) -> Result<&'a str> {
        for _ in 0..16 {
            if self.records.contains_key(name) {
                return Ok(name);
            }
            match self.aliases.get(name) {
                Some(target) => name = target,
                None => bail!("no struct or union named {name} in the bindings"),
            }
        }
        bail!("typedef loop at {name}")
    }

    /// `sizeof(ty)`.
    pub fn size_of(&self, ty: &str) -> Result<u64> {
        let record = self.record_name(ty)?;
        self.sizes
            .get(record)
            .copied()
            .ok_or_else(|| anyhow!("bindgen emitted no size for {ty} ({record})"))
    }

    /// `offsetof(T, a.b.c)` for a path written `T.a.b.c`.
    pub fn offset_of(&self, path: &str) -> Result<u64> {
        let mut parts = path.split('.');
        let ty = parts.next().context("empty path")?;
        let mut record = self.record_name(ty)?.to_string();
        let mut total = 0;
        let mut rest = parts.peekable();
        while let Some(member) = rest.next() {
            let (offset, member_type) = self
                .member(&record, member)
                .with_context(|| format!("resolving {path}"))?;
            total += offset;
            if rest.peek().is_some() {
                let ty = member_type
                    .with_context(|| format!("{path}: {member} is not an embedded struct"))?;
                record = self.record_name(&ty)?.to_string();
            }
        }
        Ok(total)
    }

    /// Offset and by-value type of `member` in `record`, looking into anonymous members
    /// (`__bindgen_anon_N`) the way C does.
    fn member(&self, record: &str, member: &str) -> Result<(u64, Option<String>)> {
        let fields = &self
            .records
            .get(record)
            .with_context(|| format!("no record {record}"))?
            .members;
        if let Some((_, ty)) = fields.iter().find(|(name, _)| name == member) {
            let offset = self.offset_in(record, member)?;
            return Ok((offset, ty.clone()));
        }
        for (name, ty) in fields {
            if !name.starts_with("__bindgen_anon_") {
                continue;
            }
            let Some(ty) = ty else { continue };
            let inner = self.record_name(ty)?;
            if let Ok((inner_offset, inner_ty)) = self.member(inner, member) {
                return Ok((self.offset_in(record, name)? + inner_offset, inner_ty));
            }
        }
        bail!("{record} has no member {member}")
    }

    fn offset_in(&self, record: &str, member: &str) -> Result<u64> {
        self.offsets
            .get(&(record.to_string(), member.to_string()))
            .copied()
            .with_context(|| format!("bindgen emitted no offset for {record}::{member}"))
    }
}

/// The type a field embeds by value, if it is a plain path (a struct, union or typedef).
fn by_value_type(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    }
}

/// Bindgen writes Rust keywords used as C member names as raw identifiers.
fn unraw(name: &str) -> String {
    name.strip_prefix("r#").unwrap_or(name).to_string()
}

#[cfg(test)]
mod tests {
    use super::Model;

    /// The shape of bindgen 0.72's output for `struct outer { long a; struct inner { int x;
    /// void *head; } in; union { int u; }; }; typedef struct outer Outer;`.
    const BINDINGS: &str = r#"
        pub struct inner { pub x: ::std::os::raw::c_int, pub head: *mut ::std::os::raw::c_void }
        const _: () = {
            ["Size of inner"][::std::mem::size_of::<inner>() - 16usize];
            ["Offset of field: inner::x"][::std::mem::offset_of!(inner, x) - 0usize];
            ["Offset of field: inner::head"][::std::mem::offset_of!(inner, head) - 8usize];
        };
        pub union outer__bindgen_ty_1 { pub u: ::std::os::raw::c_int }
        const _: () = {
            ["Offset of field: outer__bindgen_ty_1::u"][::std::mem::offset_of!(outer__bindgen_ty_1, u) - 0usize];
        };
        pub struct outer { pub a: ::std::os::raw::c_long, pub in_: inner, pub __bindgen_anon_1: outer__bindgen_ty_1 }
        const _: () = {
            ["Size of outer"][::std::mem::size_of::<outer>() - 32usize];
            ["Offset of field: outer::a"][::std::mem::offset_of!(outer, a) - 0usize];
            ["Offset of field: outer::in_"][::std::mem::offset_of!(outer, in_) - 8usize];
            ["Offset of field: outer::__bindgen_anon_1"][::std::mem::offset_of!(outer, __bindgen_anon_1) - 24usize];
        };
        pub type Outer = outer;
    "#;

    #[test]
    fn paths_are_summed_through_nested_anonymous_and_typedef_names() {
        let model = Model::parse(BINDINGS).expect("parses");
        assert_eq!(model.offset_of("Outer.a").unwrap(), 0);
        assert_eq!(model.offset_of("Outer.in_.head").unwrap(), 16);
        assert_eq!(model.offset_of("outer.u").unwrap(), 24);
        assert_eq!(model.size_of("Outer").unwrap(), 32);
        assert!(model.offset_of("Outer.missing").is_err());
        assert!(model.offset_of("Outer.a.x").is_err());
    }
}
