//! The pictures people read, from real runs: the flamegraph folds the import system into one
//! `<import system>` frame and shortens paths (full path in the tooltip) unless asked not to,
//! `--icicle` turns it over, and `--plot` draws RSS over time with the growing stack's band —
//! from `pmt-sample` and from `pmt report` alike.

mod common;

use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `<title>` text of an SVG.
fn titles(svg: &str) -> Vec<String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, options).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("title"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

/// Every `<text>` text of an SVG.
fn texts(svg: &str) -> Vec<String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, options).expect("well-formed SVG");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

#[test]
fn flamegraphs_fold_imports_and_plots_show_the_growing_stack() {
    let Some(interp) = ["3.12", "3.11", "3.13", "system3.11"]
        .into_iter()
        .find_map(common::find)
        .or_else(|| common::interpreter_or_skip("3.12"))
    else {
        return;
    };
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |name: &str| dir.path().join(name);
    let mut command = common::sampler();
    command
        .args(["--metric", "rss"])
        .arg("--flame")
        .arg(out("run.svg"))
        .arg("--plot")
        .arg(out("plot.svg"))
        .arg("--json")
        .arg(out("run.json"))
        .arg("--")
        .arg(&interp.path)
        .arg(common::script("import_heavy.py"));
    let output = common::run(command);
    assert!(output.status.success(), "pmt-sample failed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("<module> (heavy/heavy_module.py:")
            && stderr.contains("← <import system> ←"),
        "the summary reads like the flamegraph: {stderr}"
    );

    let flame = read(&out("run.svg"));
    let tips = titles(&flame);
    let module = tips
        .iter()
        .find(|t| t.starts_with("<module> (") && t.contains("heavy_module.py:"))
        .unwrap_or_else(|| panic!("heavy_module's frame: {tips:?}"));
    let full = common::script("heavy/heavy_module.py");
    assert!(
        module.contains(&format!("({}:", full.display())),
        "the tooltip has the full path: {module}"
    );
    assert!(
        tips.iter().any(|t| t.starts_with("<import system> (")),
        "{tips:?}"
    );
    assert!(
        !flame.contains("_find_and_load") && !flame.contains("frozen importlib"),
        "no import machinery by default"
    );
    let labels = texts(&flame);
    assert!(
        labels.iter().any(|t| t.contains("(heavy/heavy_module.py:")),
        "the label is short: {labels:?}"
    );

    let report = |args: &[&str]| {
        let mut command = common::pmt();
        command.arg("report").arg(out("run.json")).args(args);
        let output = common::run(command);
        assert!(output.status.success(), "pmt report {args:?}");
    };
    let imports = out("imports.svg");
    let icicle = out("icicle.svg");
    let replot = out("replot.svg");
    report(&[
        "--flame",
        imports.to_str().expect("path"),
        "--show-imports",
        "--full-paths",
    ]);
    let with_imports = read(&imports);
    assert!(
        with_imports.contains("_find_and_load"),
        "--show-imports keeps them"
    );
    assert!(
        texts(&with_imports)
            .iter()
            .any(|t| t.contains(&full.display().to_string()[..20])),
        "--full-paths labels with the full path"
    );
    report(&[
        "--flame",
        icicle.to_str().expect("path"),
        "--icicle",
        "--plot",
        replot.to_str().expect("path"),
    ]);
    // The heights of every rect of `frame` (the interpreter's own start-up may put an
    // `<import system>` at the root too, beside the one under the script's module).
    let flame_ys = |svg: &str, frame: &str| -> Vec<f64> {
        let options = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        };
        let doc = roxmltree::Document::parse_with_options(svg, options).expect("SVG");
        let ys: Vec<f64> = doc
            .descendants()
            .filter(|n| n.has_tag_name("g"))
            .filter(|g| {
                g.children().any(|c| {
                    c.has_tag_name("title") && c.text().is_some_and(|t| t.starts_with(frame))
                })
            })
            .filter_map(|g| g.children().find(|c| c.has_tag_name("rect")))
            .filter_map(|r| r.attribute("y"))
            .filter_map(|y| y.trim_end_matches('%').parse().ok())
            .collect();
        assert!(!ys.is_empty(), "no rect for {frame}");
        ys
    };
    // Root at the bottom of a flamegraph, at the top of an icicle graph.
    let root = format!("<module> ({}:", common::script("import_heavy.py").display());
    let (root_flame, leaves_flame) = (
        flame_ys(&flame, &root)[0],
        flame_ys(&flame, "<import system>"),
    );
    let icicle_svg = read(&icicle);
    let (root_icicle, leaves_icicle) = (
        flame_ys(&icicle_svg, &root)[0],
        flame_ys(&icicle_svg, "<import system>"),
    );
    assert!(
        leaves_flame.iter().any(|&y| root_flame > y),
        "flamegraph: root below"
    );
    assert!(
        leaves_icicle.iter().any(|&y| root_icicle < y),
        "icicle: root above"
    );

    for plot in [read(&out("plot.svg")), read(&replot)] {
        let words = texts(&plot).join("\n");
        assert!(words.contains("Memory over time"), "{words}");
        assert!(
            words.contains("<module> (heavy/heavy_module.py:")
                && words.contains(") ← <import system>"),
            "the growing stack has a band: {words}"
        );
        assert!(words.contains("RSS"), "{words}");
    }
}
