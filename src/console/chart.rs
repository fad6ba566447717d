//! Line charts as inline SVG, drawn on the server (no script, no external asset). Colours
//! come from classes in the console's stylesheet: the CSP allows no inline styles.

use std::fmt::Write;

use maud::{html, Markup};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// One line of a chart: a CSS class and its points `(unix seconds, value)`.
pub(crate) struct Line<'a> {
    pub(crate) class: &'static str,
    pub(crate) label: &'a str,
    pub(crate) points: Vec<(i64, f64)>,
}

/// A chart of `lines` over the `span_secs` before `now`, values in `unit`.
pub(crate) fn line_chart(
    title: &str,
    unit: &str,
    now: i64,
    span_secs: i64,
    lines: &[Line<'_>],
) -> Markup {
    let max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: i64| {
        LEFT + ((t - (now - span_secs)) as f64 / span_secs as f64).clamp(0.0, 1.0) * plot_w
    };
    let y = |v: f64| TOP + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;
    let empty = lines.iter().all(|l| l.points.len() < 2);
    html! {
        figure.chart {
            figcaption {
                (title) " "
                @for l in lines { span class={ "key " (l.class) } { (l.label) } " " }
            }
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(title) {
                title { (title) }
                @for frac in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(top * frac)) y2=(y(top * frac)) {}
                    text.axis x=(LEFT - 6.0) y=(y(top * frac) + 4.0) text-anchor="end" {
                        (number(top * frac)) " " (unit)
                    }
                }
                @for (frac, label) in [(0.0, "−60 min"), (0.5, "−30 min"), (1.0, "now")] {
                    text.axis x=(LEFT + frac * plot_w) y=(HEIGHT - 6.0)
                        text-anchor=(if frac == 0.0 { "start" } else if frac == 1.0 { "end" } else { "middle" }) {
                        (label)
                    }
                }
                @if empty {
                    text.axis x=(LEFT + plot_w / 2.0) y=(TOP + plot_h / 2.0) text-anchor="middle" {
                        "collecting data (a point every 10 s)"
                    }
                }
                @for l in lines {
                    @if l.points.len() >= 2 {
                        polyline class={ "series " (l.class) } points=(polyline(&l.points, x, y)) {}
                    }
                }
            }
        }
    }
}

fn polyline(points: &[(i64, f64)], x: impl Fn(i64) -> f64, y: impl Fn(f64) -> f64) -> String {
    let mut s = String::with_capacity(points.len() * 12);
    for &(t, v) in points {
        let _ = write!(s, "{:.1},{:.1} ", x(t), y(v));
    }
    s
}

/// The smallest of 1, 2 or 5 × 10ⁿ at or above `v` (1 for an empty chart).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// A short human number: `1234`, `12.3`, `0.05`.
pub(crate) fn number(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_rounds_up_to_1_2_or_5() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }

    #[test]
    fn a_chart_is_an_svg_with_one_polyline_per_line_and_escaped_labels() {
        let lines = [Line {
            class: "a",
            label: "<b>x</b>",
            points: vec![(0, 1.0), (1800, 3.0), (3600, 2.0)],
        }];
        let svg = line_chart("T & T", "/s", 3600, 3600, &lines).into_string();
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("&lt;b&gt;x&lt;/b&gt;"), "{svg}");
        assert!(svg.contains("T &amp; T"));
        assert!(svg.contains("points=\"56.0,120.4 "), "{svg}");
        let empty = line_chart("E", "ms", 3600, 3600, &[]).into_string();
        assert!(empty.contains("collecting data"));
    }
}
