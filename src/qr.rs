//! QR codes of URLs, so a phone opens a shared app by pointing its camera: as text for the
//! terminal (`portok share`) and as SVG for the dashboard.

use qrcode::render::{svg, unicode};
use qrcode::QrCode;

/// Half-block characters, two rows of modules a line, dark on light whatever the
/// terminal's colours (a quiet zone included).
pub fn text(data: &str) -> Option<String> {
    let code = QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .build(),
    )
}

pub fn svg(data: &str, size: u32) -> Option<String> {
    let code = QrCode::new(data.as_bytes()).ok()?;
    let doc = code
        .render::<svg::Color<'_>>()
        .min_dimensions(size, size)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // Inline in a page: the element without the XML declaration.
    Some(doc[doc.find("<svg")?..].to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_becomes_a_code() {
        let t = super::text("http://10.0.0.2:1355/").unwrap();
        assert!(t.lines().count() > 10 && t.contains('█'), "{t}");
        let s = super::svg("http://10.0.0.2:1355/", 120).unwrap();
        assert!(s.contains("<svg") && s.contains("</svg>"), "{s}");
    }
}
