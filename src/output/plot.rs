//! The SVG plot of `pmt process --plot` and `pmt tree --plot`: RSS (MiB, left axis) and CPU
//! (%, right axis) against time (s), with the start, the stop and labelled moments marked by
//! vertical lines. Drawn with `plotters`' SVG backend; it knows nothing about `/proc`.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// The data of one plot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryPlot {
    /// The title, e.g. `pmt process: PID 1234 (python3)`.
    pub title: String,
    /// (time s, RSS bytes).
    pub rss: Vec<(f64, f64)>,
    /// (time s, CPU %).
    pub cpu: Vec<(f64, f64)>,
    /// Vertical markers: (time s, text), e.g. `start`, `stop`.
    pub marks: Vec<(f64, String)>,
}

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the plot {path}: {message}")]
pub struct PlotError {
    path: String,
    message: String,
}

const MIB: f64 = 1024.0 * 1024.0;

impl MemoryPlot {
    /// Writes the plot as SVG to `path`.
    pub fn write_svg(&self, path: &Path) -> Result<(), PlotError> {
        let err = |e: &dyn std::fmt::Display| PlotError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let t_max = self
            .rss
            .iter()
            .chain(&self.cpu)
            .map(|(t, _)| *t)
            .chain(self.marks.iter().map(|(t, _)| *t))
            .fold(0.0f64, f64::max)
            .max(1e-3);
        // Room either side so that marks at the first and last sample stand clear of the axes.
        let t_pad = t_max * 0.04;
        let rss_max = self
            .rss
            .iter()
            .map(|(_, r)| r / MIB)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;
        let cpu_max = self
            .cpu
            .iter()
            .map(|(_, c)| *c)
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.1;

        let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .right_y_label_area_size(70)
            .build_cartesian_2d(-t_pad..t_max + t_pad, 0f64..rss_max)
            .map_err(|e| err(&e))?
            .set_secondary_coord(-t_pad..t_max + t_pad, 0f64..cpu_max);
        chart
            .configure_mesh()
            .x_desc("Time (s)")
            .y_desc("RSS (MiB)")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .configure_secondary_axes()
            .y_desc("CPU (%)")
            .draw()
            .map_err(|e| err(&e))?;
        let rss_colour = RGBColor(200, 30, 30);
        let cpu_colour = RGBColor(30, 60, 200);
        chart
            .draw_series(LineSeries::new(
                self.rss.iter().map(|(t, r)| (*t, r / MIB)),
                rss_colour.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("RSS (MiB), left axis")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], rss_colour.stroke_width(2))
            });
        chart
            .draw_secondary_series(LineSeries::new(self.cpu.iter().copied(), &cpu_colour))
            .map_err(|e| err(&e))?
            .label("CPU (%), right axis")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], cpu_colour));
        let mark_colour = RGBColor(20, 120, 40);
        for (index, (t, text)) in self.marks.iter().enumerate() {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*t, 0.0), (*t, rss_max)],
                    mark_colour.stroke_width(2),
                )))
                .map_err(|e| err(&e))?;
            // Labels stagger downwards so that neighbouring marks do not overwrite each other.
            let height = rss_max * (0.62 - 0.05 * (index % 4) as f64);
            // Labels near the right edge go left of their line, the others right of it.
            let near_right = *t > 0.8 * t_max;
            let (label, anchor) = if near_right {
                (format!("{text} "), HPos::Right)
            } else {
                (format!(" {text}"), HPos::Left)
            };
            let style = ("sans-serif", 13)
                .into_font()
                .color(&mark_colour)
                .pos(Pos::new(anchor, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(label, (*t, height), style)))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperMiddle)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}
