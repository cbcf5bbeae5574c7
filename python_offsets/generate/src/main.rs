//! Generates `python_offsets/generated/v3_N.rs`: the `Layout` of each installed CPython
//! 3.6–3.15, computed by bindgen (libclang) from that interpreter's own headers.
//!
//! Usage:
//!   python-offsets-generate [--pyenv-root DIR] [--include INCLUDE_DIR]... [--out DIR] [--dump DIR]
//!   python-offsets-generate --check INCLUDE_DIR [--out DIR]
//!
//! `--include` adds the headers of an interpreter that is not under pyenv (Debian sid's
//! `/usr/include/python3.14` in the chroot `.ci/sid_chroot.sh` makes); they win over pyenv's
//! for their minor version.
//!
//! `--check` lays out the headers in INCLUDE_DIR (e.g. `/usr/include/python3.11`) and exits
//! non-zero unless the numbers equal the committed table of the same minor version.

mod fields;
mod headers;
mod model;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use fields::{FIELDS, Source};
use model::Model;

/// The CPython minor versions (of 3.x) the tables cover.
const MINORS: std::ops::RangeInclusive<u8> = 6..=15;

struct Args {
    pyenv_root: PathBuf,
    includes: Vec<PathBuf>,
    out: PathBuf,
    dump: Option<PathBuf>,
    check: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let mut args = Args {
        pyenv_root: std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(&home).join(".pyenv")),
        includes: Vec::new(),
        out: Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the generator lives in python_offsets/generate")?
            .join("generated"),
        dump: None,
        check: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(PathBuf::from)
                .with_context(|| format!("{} needs a value", flag.to_string_lossy()))
        };
        match flag.to_str() {
            Some("--pyenv-root") => args.pyenv_root = value()?,
            Some("--out") => args.out = value()?,
            Some("--dump") => args.dump = Some(value()?),
            Some("--check") => args.check = Some(value()?),
            Some("--include") => args.includes.push(value()?),
            _ => bail!(
                "unknown argument {}; usage: python-offsets-generate \
                 [--pyenv-root DIR] [--include INCLUDE_DIR]... [--out DIR] [--dump DIR] \
                 | --check INCLUDE_DIR",
                flag.to_string_lossy()
            ),
        }
    }
    Ok(args)
}

/// `PY_VERSION` of the headers in `include` (`"3.11.7"`), from `patchlevel.h`.
fn header_version(include: &Path) -> Result<(u8, String)> {
    let path = include.join("patchlevel.h");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define PY_VERSION"))
        .and_then(|rest| rest.trim().strip_prefix('"'))
        .and_then(|rest| rest.split('"').next())
        .with_context(|| format!("no PY_VERSION in {}", path.display()))?
        .to_string();
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unparsable PY_VERSION {version:?}"))?;
    Ok((minor, version))
}

/// The include directory of each pyenv CPython 3.6–3.15 (the newest patch release of each).
fn pyenv_includes(root: &Path) -> Result<Vec<PathBuf>> {
    let versions = root.join("versions");
    let mut found: Vec<(u8, Vec<u32>, PathBuf)> = Vec::new();
    for entry in
        fs::read_dir(&versions).with_context(|| format!("listing {}", versions.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<u32> = match name.split('.').map(str::parse).collect() {
            Ok(p) => p,
            Err(_) => continue,
        };
        let [3, minor, _] = parts[..] else { continue };
        let Ok(minor) = u8::try_from(minor) else {
            continue;
        };
        if !MINORS.contains(&minor) {
            continue;
        }
        let include = ["", "m"]
            .iter()
            .map(|abi| entry.path().join(format!("include/python3.{minor}{abi}")))
            .find(|p| p.join("Python.h").exists());
        if let Some(include) = include {
            found.push((minor, parts, include));
        }
    }
    found.sort();
    // Keep the newest patch release of each minor.
    found.dedup_by(|later, earlier| {
        if later.0 == earlier.0 {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    Ok(found.into_iter().map(|(_, _, p)| p).collect())
}

/// Runs bindgen over the headers of one interpreter.
fn bindings(minor: u8, include: &Path) -> Result<String> {
    let mut builder = bindgen::Builder::default()
        .header_contents("pmt_layout_wrapper.h", &headers::wrapper(minor))
        .clang_arg(format!("-I{}", include.display()))
        .clang_arg(format!("-I{}", include.join("internal").display()))
        // Debian's multiarch `pyconfig.h` includes `<x86_64-linux-gnu/python3.X/pyconfig.h>`
        // from the include root beside the Python headers (a chroot's, for sid's).
        .clang_arg(format!("-idirafter{}", include.join("..").display()))
        .layout_tests(true)
        .generate_comments(false)
        .derive_copy(false)
        .derive_debug(false)
        .derive_default(false);
    for ty in headers::ROOT_TYPES {
        builder = builder.allowlist_type(ty);
    }
    let generated = builder
        .generate()
        .with_context(|| format!("bindgen failed on {}", include.display()))?;
    Ok(generated.to_string())
}

/// Computes every `Layout` field for 3.`minor` and renders the struct literal.
fn render_layout(minor: u8, model: &Model) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "pub const LAYOUT: Layout = Layout {{")?;
    writeln!(out, "    version: (3, {minor}),")?;
    for field in FIELDS {
        let value = match (field.source)(minor) {
            Some(Source::Offset(path)) => Some(model.offset_of(&path)?),
            Some(Source::Size(ty)) => Some(model.size_of(ty)?),
            None => None,
        };
        let text = match (field.optional, value) {
            (true, Some(v)) => format!("Some({v})"),
            (true, None) => "None".to_string(),
            (false, Some(v)) => v.to_string(),
            (false, None) => bail!("{} has no source for 3.{minor}", field.name),
        };
        writeln!(out, "    {}: {text},", field.name)?;
    }
    writeln!(out, "}};")?;
    Ok(out)
}

/// Lays out the headers in `include`; returns `(minor, PY_VERSION, rendered layout)`.
fn layout_of(include: &Path, dump: Option<&Path>) -> Result<(u8, String, String)> {
    let (minor, version) = header_version(include)?;
    if !MINORS.contains(&minor) {
        bail!(
            "{} holds CPython {version}, not 3.6–3.15",
            include.display()
        );
    }
    let source = bindings(minor, include)?;
    if let Some(dir) = dump {
        fs::create_dir_all(dir)?;
        fs::write(dir.join(format!("bindings_{version}.rs")), &source)?;
    }
    let model = Model::parse(&source)?;
    let body = render_layout(minor, &model)
        .with_context(|| format!("laying out CPython {version} ({})", include.display()))?;
    Ok((minor, version, body))
}

fn table_path(out: &Path, minor: u8) -> PathBuf {
    out.join(format!("v3_{minor}.rs"))
}

/// Writes one generated table and formats it with rustfmt.
fn write_table(out: &Path, minor: u8, version: &str, include: &Path, body: &str) -> Result<()> {
    let path = table_path(out, minor);
    let text = format!(
        "// Generated by python_offsets/generate from the CPython {version} headers at {}: do not edit.\n\n{body}",
        include.display()
    );
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let status = Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(&path)
        .status()
        .context("running rustfmt")?;
    if !status.success() {
        bail!("rustfmt failed on {}", path.display());
    }
    Ok(())
}

/// The table part (everything after the first, provenance line) of a generated file.
fn table_body(text: &str) -> String {
    text.lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(include: &Path, args: &Args) -> Result<()> {
    let (minor, version, body) = layout_of(include, args.dump.as_deref())?;
    let path = table_path(&args.out, minor);
    let committed =
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let committed_body = table_body(&committed);
    let fresh_body = table_body(&format!("\n{body}"));
    if committed_body == fresh_body {
        println!(
            "CPython {version} headers at {}: identical to {} ({})",
            include.display(),
            path.display(),
            committed.lines().next().unwrap_or_default()
        );
        return Ok(());
    }
    for (a, b) in committed_body.lines().zip(fresh_body.lines()) {
        if a != b {
            eprintln!("  committed: {a}\n  {version}: {b}");
        }
    }
    bail!(
        "CPython {version} headers at {} differ from {}",
        include.display(),
        path.display()
    )
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(include) = &args.check {
        return check(include, &args);
    }
    let mut includes = pyenv_includes(&args.pyenv_root)?;
    for extra in &args.includes {
        let (minor, _) = header_version(extra)?;
        includes.retain(|p| header_version(p).ok().map(|(m, _)| m) != Some(minor));
        includes.push(extra.clone());
    }
    if includes.is_empty() {
        bail!(
            "no CPython 3.6–3.15 under {}/versions",
            args.pyenv_root.display()
        );
    }
    fs::create_dir_all(&args.out)?;
    for include in includes {
        let (minor, version, body) = layout_of(&include, args.dump.as_deref())?;
        write_table(&args.out, minor, &version, &include, &body)?;
        println!(
            "3.{minor}: {} from CPython {version} at {}",
            table_path(&args.out, minor).display(),
            include.display()
        );
    }
    Ok(())
}
