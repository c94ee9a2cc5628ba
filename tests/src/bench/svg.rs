//! The report's plots, as SVG strings (plotters' SVG backend; pure): a CDF of
//! failover times per tool and fault, and the timeline of probe replies around
//! one failover.

use super::stats::cdf_points;
use plotters::prelude::*;

/// One line of a CDF plot.
pub struct Series {
    pub label: String,
    /// 0 = hb, 1 = keepalived: hb lines are solid, keepalived's carry markers.
    pub family: usize,
    pub samples_ms: Vec<f64>,
}

const HB_COLORS: [RGBColor; 3] = [
    RGBColor(0, 90, 200),
    RGBColor(0, 150, 120),
    RGBColor(120, 60, 200),
];
const KA_COLORS: [RGBColor; 3] = [
    RGBColor(220, 50, 30),
    RGBColor(230, 140, 0),
    RGBColor(150, 80, 40),
];

fn color(family: usize, i: usize) -> RGBColor {
    if family == 0 {
        HB_COLORS[i % 3]
    } else {
        KA_COLORS[i % 3]
    }
}

/// Powers of ten around [lo, hi], for a log axis.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    let lo = 10f64.powf(lo.max(0.01).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    (lo, hi)
}

/// Empirical CDFs of failover times on a log time axis.
pub fn cdf(title: &str, series: &[Series]) -> Result<String, String> {
    let all: Vec<f64> = series
        .iter()
        .flat_map(|s| s.samples_ms.iter().copied())
        .collect();
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let max = all.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if all.is_empty() {
        (1.0, 1000.0)
    } else {
        decades(min, max)
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.02f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("failover time, ms (log scale)")
            .y_desc("fraction of runs")
            .x_label_formatter(&|v| format!("{v}"))
            .draw()
            .map_err(|e| e.to_string())?;
        let mut per_family = [0usize; 2];
        for s in series {
            let i = per_family[s.family.min(1)];
            per_family[s.family.min(1)] += 1;
            let c = color(s.family, i);
            let pts = cdf_points(&s.samples_ms);
            let stroke = c.stroke_width(2);
            chart
                .draw_series(LineSeries::new(pts.clone(), stroke))
                .map_err(|e| e.to_string())?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            if s.family == 1 {
                // Markers on the steps' tops tell keepalived apart in grey print.
                chart
                    .draw_series(
                        pts.iter()
                            .skip(1)
                            .step_by(2)
                            .map(|&(x, y)| Circle::new((x, y), 3, c.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        chart
            .configure_series_labels()
            // CDFs rise to the right: the upper left stays empty.
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// One failover seen by the probe: each reply at its time (ms from the fault) on
/// the row of the node that answered.
pub struct TimelineTrack {
    pub label: String,
    pub family: usize,
    /// (ms since the fault, row index into `rows`).
    pub replies: Vec<(f64, usize)>,
    pub failover_ms: f64,
}

pub fn timeline(title: &str, rows: &[String], tracks: &[TimelineTrack]) -> Result<String, String> {
    let x_max = tracks
        .iter()
        .flat_map(|t| t.replies.iter().map(|r| r.0))
        .fold(10.0, f64::max);
    let x_min = tracks
        .iter()
        .flat_map(|t| t.replies.iter().map(|r| r.0))
        .fold(-10.0, f64::min);
    let n = rows.len().max(1) as f64;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 200 + 60 * rows.len() as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(140)
            // Room above the top row for the legend.
            .build_cartesian_2d(x_min..x_max, -0.5f64..n + 0.9)
            .map_err(|e| e.to_string())?;
        let names = rows.to_vec();
        chart
            .configure_mesh()
            .x_desc("ms since the fault")
            .y_labels(rows.len() * 2 + 1)
            .y_label_formatter(&move |v| {
                let i = v.round();
                if (v - i).abs() < 0.01 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, -0.5), (0.0, n - 0.5)],
                BLACK.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("fault")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        for (i, t) in tracks.iter().enumerate() {
            let c = color(t.family, i);
            chart
                .draw_series(
                    t.replies
                        .iter()
                        .map(|&(x, row)| Circle::new((x, row as f64), 2, c.filled())),
                )
                .map_err(|e| e.to_string())?
                .label(format!(
                    "{} (first reply from the new holder at {:.1} ms)",
                    t.label, t.failover_ms
                ))
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
            chart
                .draw_series(LineSeries::new(
                    vec![(t.failover_ms, -0.5), (t.failover_ms, n - 0.5)],
                    c.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Checks that `svg` is one balanced XML element tree (tags only; enough to catch
/// truncated or interleaved output).
pub fn well_formed(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg.trim();
    if rest.starts_with("<?xml") {
        rest = &rest[rest.find("?>").ok_or("unterminated declaration")? + 2..];
    }
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            match stack.pop() {
                Some(top) if top == name.trim() => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
        } else if !tag.starts_with('!') && !tag.starts_with('?') {
            if stack.is_empty() {
                roots += 1;
            }
            let name = tag
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            if !tag.ends_with('/') {
                stack.push(name.to_string());
            }
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_is_well_formed_and_names_every_series() {
        let s = cdf(
            "Failover time",
            &[
                Series {
                    label: "hb SIGKILL".into(),
                    family: 0,
                    samples_ms: vec![31.0, 33.5, 35.0],
                },
                Series {
                    label: "keepalived SIGKILL".into(),
                    family: 1,
                    samples_ms: vec![3650.0, 3700.0],
                },
            ],
        )
        .unwrap();
        well_formed(&s).unwrap();
        assert!(s.starts_with("<svg"));
        assert!(s.contains("hb SIGKILL") && s.contains("keepalived SIGKILL"));
        assert!(s.contains("Failover time"));
        // Two markers for keepalived's two samples (plus the legend's nothing).
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("<polyline"), "CDF lines");
    }

    #[test]
    fn timeline_is_well_formed_and_labels_rows() {
        let rows = vec!["hb node 1".to_string(), "hb node 2".to_string()];
        let s = timeline(
            "One failover",
            &rows,
            &[TimelineTrack {
                label: "hb SIGKILL".into(),
                family: 0,
                replies: vec![(-2.0, 0), (-1.0, 0), (33.0, 1), (34.0, 1)],
                failover_ms: 33.0,
            }],
        )
        .unwrap();
        well_formed(&s).unwrap();
        assert!(s.contains("hb node 1") && s.contains("hb node 2"));
        assert!(s.contains("33.0 ms"));
        // Four replies and one legend marker.
        assert_eq!(s.matches("<circle").count(), 5);
    }

    #[test]
    fn the_checker_catches_broken_svg() {
        assert!(well_formed("<svg><g></svg>").is_err());
        assert!(well_formed("<svg><g/></svg>").is_ok());
        assert!(well_formed("<svg></svg><svg></svg>").is_err());
        assert!(well_formed("<svg><text>a</text>").is_err());
    }
}
