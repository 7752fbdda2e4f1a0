//! Throughput-versus-batch-size charts (SVG, via plotters).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(batch size, texts/s)` points.
    pub points: Vec<(usize, f64)>,
}

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xff, 0x7f, 0x0e),
];

/// Writes a line chart of texts/s against batch size (log₂ x axis).
pub fn throughput_svg(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let all: Vec<(usize, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if all.is_empty() {
        return Err(anyhow!("nothing to plot for {title}"));
    }
    let x_max = all.iter().map(|p| (p.0 as f64).log2()).fold(0.0, f64::max).max(1.0);
    let y_max = all.iter().map(|p| p.1).fold(0.0, f64::max) * 1.12;
    let root = SVGBackend::new(path, (860, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.2f64..x_max + 0.2, 0f64..y_max.max(1e-9))
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("batch size (texts per call)")
        .y_desc("texts / s")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| format!("{}", 2f64.powf(x.round()) as u64))
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(b, y)| ((b as f64).log2(), y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| anyhow!("{e:?}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow!("{e:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_series() {
        let dir = std::env::temp_dir().join(format!("xtask-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        let series = vec![
            Series { name: "fine".into(), points: vec![(1, 10.0), (2, 14.0), (128, 20.0)] },
            Series { name: "coarse".into(), points: vec![(1, 6.0), (2, 12.0), (128, 30.0)] },
        ];
        throughput_svg(&path, "short texts, 2 threads", &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("fine") && svg.contains("coarse") && svg.contains("texts / s"));
        assert!(svg.contains("128"), "log2 axis labels show batch sizes");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(throughput_svg(&dir.join("x.svg"), "empty", &[]).is_err());
    }
}
