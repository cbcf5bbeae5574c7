//! The memory-over-time picture of a sampling run (`--plot FILE.svg`): the process RSS (the
//! sum over the processes alive at each moment with `--subprocesses`) against time, and under
//! it, stacked, what the top stacks of the `rss` metric held at each moment (the growth ledger
//! replayed), above the RSS those processes started with. The gap between the stacked areas and the RSS line is what other
//! stacks held, or memory sampling could not charge. Drawn with `plotters`' SVG backend.
//!
//! Owns: the choice of stacks shown and the drawing. Must not touch: how holdings are
//! computed (the profile's ledger) or how frames read ([`super::frames`]).

use super::frames::{FrameLabels, FrameStyle};
use crate::profile::Profile;
use crate::sample::Metric;
use plotters::prelude::*;
use std::collections::HashMap;
use std::io;

/// How many stacks get their own band.
const TOP_STACKS: usize = 6;
const MIB: f64 = 1024.0 * 1024.0;

/// The bands' colours, the biggest stack first.
const COLOURS: [RGBColor; TOP_STACKS] = [
    RGBColor(214, 96, 77),
    RGBColor(244, 165, 130),
    RGBColor(146, 197, 222),
    RGBColor(67, 147, 195),
    RGBColor(166, 217, 106),
    RGBColor(253, 219, 120),
];

/// The series to draw.
struct GrowthSeries {
    /// (time s, total RSS bytes).
    rss: Vec<(f64, f64)>,
    /// Per band: its label and (time s, bytes held).
    bands: Vec<(String, Vec<(f64, f64)>)>,
    /// (time s, what the processes alive then started with).
    base: Vec<(f64, f64)>,
    /// Whether several processes were sampled.
    several: bool,
}

/// The stacks with the most `rss` weight (merged over threads), the biggest first.
fn top_stacks(profile: &Profile) -> Vec<(u32, u64)> {
    let mut by_stack: HashMap<u32, u64> = HashMap::new();
    for weight in profile.weights() {
        let rss = weight.values.get(Metric::Rss);
        if rss == 0 {
            continue;
        }
        if let Some(id) = profile
            .stacks()
            .iter()
            .position(|s| s.as_slice() == weight.frames)
        {
            *by_stack.entry(id as u32).or_default() += rss;
        }
    }
    let mut top: Vec<(u32, u64)> = by_stack.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(TOP_STACKS);
    top
}

/// A band's legend: the stack's two innermost frames, innermost first.
fn band_label(profile: &Profile, labels: &FrameLabels, stack: u32) -> String {
    let frames = profile
        .stacks()
        .get(stack as usize)
        .map_or(&[][..], |s| s.as_slice());
    let stack = labels.stack(frames);
    let shown: Vec<&str> = stack.iter().rev().take(2).map(String::as_str).collect();
    if shown.is_empty() {
        "<no Python frames>".to_string()
    } else {
        shown.join(" ← ")
    }
}

/// One process's state while the timeline is replayed.
#[derive(Debug, Default)]
struct ProcessState {
    rss: u64,
    /// Its RSS at its first sample: what it started with.
    base: u64,
    last_seen: f64,
    held: Vec<u64>,
}

/// The totals over the processes alive at one moment: (RSS, starting RSS, held per band).
fn totals(
    processes: &HashMap<Option<u32>, ProcessState>,
    time: f64,
    stale: f64,
    bands: usize,
) -> (u64, u64, Vec<u64>) {
    let mut rss = 0;
    let mut base = 0;
    let mut held = vec![0; bands];
    for state in processes.values().filter(|p| p.last_seen >= time - stale) {
        rss += state.rss;
        base += state.base;
        for (total, h) in held.iter_mut().zip(&state.held) {
            *total += h;
        }
    }
    (rss, base, held)
}

fn series(profile: &Profile) -> GrowthSeries {
    let labels = FrameLabels::new(profile, FrameStyle::READABLE);
    let top = top_stacks(profile);
    let mut bands: Vec<(String, Vec<(f64, f64)>)> = top
        .iter()
        .map(|&(stack, _)| (band_label(profile, &labels, stack), Vec::new()))
        .collect();
    // A process not sampled for three ticks has exited: it no longer counts.
    let rate = profile
        .summary
        .as_ref()
        .map_or(100.0, |s| s.rate_hz)
        .max(0.1);
    let stale = (3.0 / rate).max(0.05);
    let mut processes: HashMap<Option<u32>, ProcessState> = HashMap::new();
    let mut rss = Vec::new();
    let mut base = Vec::new();
    let mut pending: Option<f64> = None;
    let mut emit = |time: f64, processes: &HashMap<Option<u32>, ProcessState>| {
        let (total, start, held) = totals(processes, time, stale, top.len());
        rss.push((time, total as f64));
        base.push((time, start as f64));
        for ((_, points), h) in bands.iter_mut().zip(held) {
            points.push((time, h as f64));
        }
    };
    profile.replay_holdings(|time, process, sample_rss, holdings| {
        if let Some(previous) = pending.filter(|&t| t != time) {
            emit(previous, &processes);
        }
        pending = Some(time);
        let state = processes.entry(process).or_insert_with(|| ProcessState {
            base: sample_rss.unwrap_or(0),
            ..ProcessState::default()
        });
        if let Some(sample_rss) = sample_rss {
            state.rss = sample_rss;
        }
        state.last_seen = time;
        state.held = top
            .iter()
            .map(|&(stack, _)| {
                holdings
                    .iter()
                    .filter(|((_, s), _)| *s == stack)
                    .map(|(_, b)| b)
                    .sum()
            })
            .collect();
    });
    if let Some(last) = pending {
        emit(last, &processes);
    }
    GrowthSeries {
        rss,
        bands,
        base,
        several: !profile.processes().is_empty(),
    }
}

/// Draws the plot of `profile` (which must keep its timeline) as SVG into `out`.
pub fn write(profile: &Profile, title: &str, out: &mut dyn io::Write) -> io::Result<()> {
    let data = series(profile);
    let mut svg = String::new();
    draw(&data, title, &mut svg).map_err(|e| io::Error::other(e.to_string()))?;
    out.write_all(svg.as_bytes())?;
    out.flush()
}

fn draw(
    data: &GrowthSeries,
    title: &str,
    svg: &mut String,
) -> Result<(), Box<dyn std::error::Error>> {
    let t_max = data.rss.last().map_or(1.0, |&(t, _)| t).max(1e-3);
    let y_max = data
        .rss
        .iter()
        .map(|&(_, r)| r)
        .chain(data.base.iter().enumerate().map(|(i, &(_, b))| {
            b + data
                .bands
                .iter()
                .map(|(_, points)| points.get(i).map_or(0.0, |&(_, h)| h))
                .sum::<f64>()
        }))
        .fold(0.0, f64::max)
        .max(MIB)
        / MIB
        * 1.1;
    let root = SVGBackend::with_string(svg, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("Time (s)")
        .y_desc("MiB")
        .draw()?;
    // Cumulative tops, so that each band is drawn from the axis up and the next one over it.
    let mut stacked: Vec<Vec<(f64, f64)>> = Vec::with_capacity(data.bands.len());
    let mut below: Vec<f64> = data.base.iter().map(|&(_, b)| b).collect();
    for (_, points) in &data.bands {
        let top: Vec<(f64, f64)> = points
            .iter()
            .zip(&below)
            .map(|(&(t, held), &under)| (t, under + held))
            .collect();
        below = top.iter().map(|&(_, y)| y).collect();
        stacked.push(top);
    }
    for (band, top) in stacked.iter().enumerate().rev() {
        let colour = COLOURS[band % COLOURS.len()];
        chart
            .draw_series(AreaSeries::new(
                top.iter().map(|&(t, y)| (t, y / MIB)),
                0.0,
                colour.filled(),
            ))?
            .label(data.bands[band].0.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    let grey = RGBColor(200, 200, 200);
    chart
        .draw_series(AreaSeries::new(
            data.base.iter().map(|&(t, b)| (t, b / MIB)),
            0.0,
            grey.filled(),
        ))?
        .label(if data.several {
            "RSS the processes started with"
        } else {
            "RSS at the start"
        })
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], grey.filled()));
    chart
        .draw_series(LineSeries::new(
            data.rss.iter().map(|&(t, r)| (t, r / MIB)),
            BLACK.stroke_width(2),
        ))?
        .label("RSS")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::test_support::two_thread_profile;

    #[test]
    fn the_growing_stack_gets_the_biggest_band() {
        let profile = two_thread_profile();
        let data = series(&profile);
        assert_eq!(
            data.rss.len(),
            profile
                .timeline()
                .map_or(0, crate::sample_log::SampleLog::len)
        );
        let (label, points) = &data.bands[0];
        assert!(label.starts_with("grow (app/file.py:7) ← main"), "{label}");
        let last = points.last().map_or(0.0, |&(_, held)| held);
        assert_eq!(last, (4 * (1 << 20) + 2 * 512) as f64);
        let mut svg = Vec::new();
        write(&profile, "test", &mut svg).expect("draw");
        let text = String::from_utf8(svg).expect("utf-8");
        roxmltree::Document::parse(&text).expect("well-formed SVG");
        assert!(text.contains("grow (app/file.py:7)"));
    }
}
