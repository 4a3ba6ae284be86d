//! Charts as inline SVG drawn on the server (no chart library, no script): a stacked bar
//! chart of spend over time and the utilisation bar. Series differ by colour *and* pattern,
//! every segment carries its figure in a tooltip, and the chart comes with its data as a
//! table, so nothing depends on telling colours apart.

use tollgate_types::NanoUsd;

use crate::ui::html::esc;

/// One stacked series: its name and one value (nano-USD) per bucket.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) values: Vec<i64>,
}

/// A colour-blind-safe palette (Okabe–Ito); the last is for "other".
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#8c959f",
];

/// A mark drawn over each colour, so series differ without colour too.
const MARKS: [&str; 8] = [
    "",
    "<path d=\"M0 8L8 0\" stroke=\"#fff\" stroke-width=\"1.5\"/>",
    "<circle cx=\"4\" cy=\"4\" r=\"1.6\" fill=\"#fff\"/>",
    "<path d=\"M0 4H8\" stroke=\"#fff\" stroke-width=\"1.5\"/>",
    "<path d=\"M4 0V8\" stroke=\"#fff\" stroke-width=\"1.5\"/>",
    "<path d=\"M0 0L8 8M8 0L0 8\" stroke=\"#fff\" stroke-width=\"1\"/>",
    "<path d=\"M0 0L8 8\" stroke=\"#1b1f24\" stroke-width=\"1.2\"/>",
    "<circle cx=\"2\" cy=\"2\" r=\"1\" fill=\"#fff\"/><circle cx=\"6\" cy=\"6\" r=\"1\" fill=\"#fff\"/>",
];

/// The most series drawn; the rest are summed into "other".
pub(crate) const MAX_SERIES: usize = 7;

fn pattern_id(i: usize) -> String {
    format!("series-{}", i % COLOURS.len())
}

fn swatch(i: usize) -> String {
    format!(
        "<svg viewBox=\"0 0 16 9\" aria-hidden=\"true\"><rect width=\"16\" height=\"9\" fill=\"url(#{})\"/></svg>",
        pattern_id(i)
    )
}

/// A stacked bar chart: `buckets` are the x labels (one per bar), `series` stack bottom-up in
/// order. Returns a `<figure>` with the SVG, its legend (each series with its total) and the
/// data table.
pub(crate) fn stacked_bars(
    id: &str,
    caption: &str,
    buckets: &[String],
    series: &[Series],
) -> String {
    const W: f64 = 960.0;
    const H: f64 = 260.0;
    const LEFT: f64 = 86.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 34.0;
    let n = buckets.len().max(1);
    let sums: Vec<i64> = (0..buckets.len())
        .map(|b| {
            series
                .iter()
                .map(|s| s.values.get(b).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = sums.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / n as f64;
    let bar_w = (slot * 0.8).max(1.0);
    let y_of = |v: i64| TOP + plot_h - plot_h * (v as f64 / max as f64);

    let mut svg = format!(
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-labelledby=\"{id}-title\"><title id=\"{id}-title\">{}</title><defs>",
        esc(caption)
    );
    for (i, (colour, mark)) in COLOURS.iter().zip(MARKS).enumerate() {
        svg.push_str(&format!(
            "<pattern id=\"{}\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\"><rect width=\"8\" height=\"8\" fill=\"{colour}\"/>{mark}</pattern>",
            pattern_id(i)
        ));
    }
    svg.push_str("</defs>");
    // Axis and three gridlines with their amounts.
    for frac in [0i64, 1, 2] {
        let v = max * frac / 2;
        let y = y_of(v);
        svg.push_str(&format!(
            "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">${}</text>",
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            NanoUsd(v).to_usd_string()
        ));
    }
    for (b, label) in buckets.iter().enumerate() {
        let x = LEFT + slot * b as f64 + (slot - bar_w) / 2.0;
        let mut base = 0i64;
        for (i, s) in series.iter().enumerate() {
            let v = s.values.get(b).copied().unwrap_or(0);
            if v <= 0 {
                continue;
            }
            let (y1, y0) = (y_of(base + v), y_of(base));
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"url(#{})\"><title>{} · {}: ${}</title></rect>",
                (y0 - y1).max(0.5),
                pattern_id(i),
                esc(label),
                esc(&s.name),
                NanoUsd(v).to_usd_string()
            ));
            base += v;
        }
    }
    // At most eight x labels, evenly spaced.
    let step = buckets.len().div_ceil(8).max(1);
    for (b, label) in buckets.iter().enumerate().filter(|(b, _)| b % step == 0) {
        let x = LEFT + slot * b as f64 + slot / 2.0;
        svg.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM + 16.0,
            esc(label)
        ));
    }
    svg.push_str("</svg>");

    let mut legend = String::from("<ul class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let total: i64 = s.values.iter().sum();
        legend.push_str(&format!(
            "<li>{}{}: ${}</li>",
            swatch(i),
            esc(&s.name),
            NanoUsd(total).to_usd_string()
        ));
    }
    legend.push_str("</ul>");

    // Headings are user input (tenant names…) and the table helper takes static headings, so
    // this table is written here.
    let mut data = format!(
        "<div class=\"scroll\"><table id=\"{}-data\"><thead><tr><th scope=\"col\">Bucket</th>",
        esc(id)
    );
    for s in series {
        data.push_str(&format!(
            "<th scope=\"col\" class=\"num\">{}</th>",
            esc(&s.name)
        ));
    }
    data.push_str("<th scope=\"col\" class=\"num\">Total</th></tr></thead><tbody>");
    for (b, label) in buckets.iter().enumerate() {
        data.push_str(&format!("<tr><td>{}</td>", esc(label)));
        for s in series {
            let v = s.values.get(b).copied().unwrap_or(0);
            data.push_str(&format!(
                "<td class=\"num\">${}</td>",
                NanoUsd(v).to_usd_string()
            ));
        }
        data.push_str(&format!(
            "<td class=\"num\">${}</td></tr>",
            NanoUsd(sums.get(b).copied().unwrap_or(0)).to_usd_string()
        ));
    }
    data.push_str("</tbody></table></div>");
    format!(
        "<figure class=\"chart\" id=\"{}\">{svg}<figcaption>{}</figcaption>{legend}<details><summary>Data</summary>{data}</details></figure>",
        esc(id),
        esc(caption)
    )
}

/// A utilisation bar for a percentage the API gave as text (`"42.5"`), with the number
/// beside it: the bar is decoration, the text is the figure.
pub(crate) fn utilization(pct_text: &str) -> String {
    let pct: f64 = pct_text.parse().unwrap_or(0.0);
    let level = if pct >= 100.0 {
        " bad"
    } else if pct >= 80.0 {
        " warn"
    } else {
        ""
    };
    format!(
        "<span class=\"util\"><svg class=\"bar\" viewBox=\"0 0 100 8\" preserveAspectRatio=\"none\" aria-hidden=\"true\"><rect class=\"track\" width=\"100\" height=\"8\"/><rect class=\"fill{level}\" width=\"{:.1}\" height=\"8\"/></svg><span data-figure=\"utilization\">{}%</span></span>",
        pct.clamp(0.0, 100.0),
        esc(pct_text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_names_and_carry_their_data() {
        let series = vec![
            Series {
                name: "<script>x</script>".into(),
                values: vec![1_000, 0, 2_500],
            },
            Series {
                name: "b".into(),
                values: vec![500, 0, 0],
            },
        ];
        let buckets = vec!["01:00".to_string(), "02:00".into(), "03:00".into()];
        let svg = stacked_bars("c", "Spend <by> tenant", &buckets, &series);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;x&lt;/script&gt;: $0.0000035"));
        assert!(svg.contains("Spend &lt;by&gt; tenant"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3,
            "zero segments are not drawn"
        );
        assert!(!svg.contains("style="));
    }

    #[test]
    fn utilisation_shows_the_number_and_clamps_the_bar() {
        let u = utilization("142.5");
        assert!(u.contains(">142.5%<") && u.contains("width=\"100.0\"") && u.contains(" bad"));
        assert!(utilization("12").contains("width=\"12.0\""));
    }
}
