//! The gnuplot files `pmt process --gnuplot DIR` writes, as pymemtrace's `process.py LOG DIR`
//! writes them: `NAME.dat` (the per-PID table, columns padded to their widest cell + 2) and
//! `NAME.plt` (RSS on the left axis; page faults and CPU on the right; labels as arrows).
//! gnuplot itself is run only if it is installed.

use crate::monitor::record::{PidTable, ProcessRecord, pid_tables};
use std::path::{Path, PathBuf};

/// The text of a `.dat` file: each row's cells left-aligned to the column's widest cell + 2.
pub fn dat_text(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count() + 2);
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of a `.plt` file plotting `NAME.dat` to `NAME.png`, with a labelled arrow at each
/// labelled record's time.
pub fn plt_text(name: &str, table: &PidTable, labels: &[(f64, String)]) -> String {
    let y = 0.5 * (table.rss_max.saturating_sub(table.rss_min)) as f64 / (1024.0 * 1024.0);
    let mut label_lines = String::new();
    for (t, text) in labels {
        let text = text.replace('"', "'");
        label_lines.push_str(&format!("set arrow from {t},{y} to {t},0 lt -1 lw 1\n"));
        label_lines.push_str(&format!(
            "set label \"{text}\" at {t},{} left font \",10\" rotate by 90 noenhanced front\n",
            y * 1.025
        ));
    }
    format!(
        "set grid\n\
         set title \"Memory and CPU Usage.\" font \",14\"\n\
         set xlabel \"Elapsed Time (s)\"\n\
         set ylabel \"Memory Usage (Mb)\"\n\
         set y2label \"CPU Usage (%), Page Faults (10,000/s)\"\n\
         set y2tics\n\
         set pointsize 1\n\
         set datafile separator whitespace\n\
         set datafile missing \"NaN\"\n\
         set terminal png size 1000,700\n\
         set output \"{name}.png\"\n\
         {label_lines}\
         plot \"{name}.dat\" using 1:($2 / 1024**2) axes x1y1 title \"RSS (Mb), left axis\" with lines lt 1 lw 2, \\\n    \
         \"{name}.dat\" using 1:($3 / 10000) axes x1y2 title \"Page Faults (10,000/s), right axis\" with lines lt 3 lw 1, \\\n    \
         \"{name}.dat\" using 1:5 axes x1y2 title \"Mean CPU (%), right axis\" with lines lt 2 lw 1, \\\n    \
         \"{name}.dat\" using 1:6 axes x1y2 title \"Instantaneous CPU (%), right axis\" with lines lt 7 lw 1\n\
         reset\n"
    )
}

/// Writes `BASE_PID.dat` and `BASE_PID.plt` into `dir` (created if needed) for every PID in
/// `records`, runs gnuplot on each if it is installed, and returns the files written.
pub fn write_gnuplot(
    dir: &Path,
    base: &str,
    records: &[ProcessRecord],
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let labels: Vec<(f64, String)> = records
        .iter()
        .filter_map(|r| Some((r.elapsed_time, r.label.clone()?)))
        .collect();
    let has_gnuplot = std::process::Command::new("gnuplot")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let mut written = Vec::new();
    for table in pid_tables(records) {
        let name = format!("{base}_{}", table.pid);
        let dat = dir.join(format!("{name}.dat"));
        let plt = dir.join(format!("{name}.plt"));
        std::fs::write(&dat, dat_text(&table.rows))?;
        std::fs::write(&plt, plt_text(&name, &table, &labels))?;
        written.push(dat);
        written.push(plt);
        if has_gnuplot {
            let status = std::process::Command::new("gnuplot")
                .arg(format!("{name}.plt"))
                .current_dir(dir)
                .status()?;
            if status.success() {
                written.push(dir.join(format!("{name}.png")));
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dat_columns_are_padded_to_widest_plus_two() {
        let rows = vec![
            vec!["#t(s)".to_string(), "RSS".to_string()],
            vec!["0.4".to_string(), "18477056".to_string()],
        ];
        assert_eq!(dat_text(&rows), "#t(s)   RSS       \n0.4     18477056  ");
    }

    #[test]
    fn plt_names_its_data_and_labels() {
        let table = PidTable {
            pid: 7,
            rows: Vec::new(),
            rss_min: 0,
            rss_max: 2 * 1024 * 1024,
        };
        let text = plt_text("run_7", &table, &[(1.5, "big \"alloc\"".into())]);
        assert!(text.contains("set output \"run_7.png\""));
        assert!(text.contains("plot \"run_7.dat\" using 1:($2 / 1024**2)"));
        assert!(text.contains("set arrow from 1.5,1 to 1.5,0"));
        assert!(text.contains("set label \"big 'alloc'\" at 1.5,1.025"));
    }
}
