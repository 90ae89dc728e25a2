//! Text measurement and line wrapping with the embedded fonts.
//!
//! Widths come from shaping with rustybuzz, the same shaper krilla uses when it draws, so
//! right-aligned amounts line up exactly and wrapped lines never overrun their column.

use rustybuzz::{Face, UnicodeBuffer};

/// Font data of the regular and bold faces, shipped in `assets/`: DejaVu Sans cut down to
/// Latin, Greek and Cyrillic (how, and why: `assets/README.md`).
pub(super) const REGULAR_TTF: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub(super) const BOLD_TTF: &[u8] = include_bytes!("../../assets/DejaVuSans-Bold.ttf");

/// Which face to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Weight {
    Regular,
    Bold,
}

/// Shapers for both faces.
pub(super) struct Measurer {
    regular: Face<'static>,
    bold: Face<'static>,
}

impl Measurer {
    /// `None` only if the embedded font files are broken, which the tests rule out.
    pub(super) fn new() -> Option<Self> {
        Some(Self {
            regular: Face::from_slice(REGULAR_TTF, 0)?,
            bold: Face::from_slice(BOLD_TTF, 0)?,
        })
    }

    /// Advance width of `text` in points at `size`.
    pub(super) fn width(&self, text: &str, weight: Weight, size: f32) -> f32 {
        if text.is_empty() {
            return 0.0;
        }
        let face = match weight {
            Weight::Regular => &self.regular,
            Weight::Bold => &self.bold,
        };
        let mut buffer = UnicodeBuffer::new();
        buffer.push_str(text);
        buffer.guess_segment_properties();
        // Must match the direction used to draw (see `pdf::render`).
        buffer.set_direction(rustybuzz::Direction::LeftToRight);
        let output = rustybuzz::shape(face, &[], buffer);
        let units: i64 = output
            .glyph_positions()
            .iter()
            .map(|pos| i64::from(pos.x_advance))
            .sum();
        units as f32 / face.units_per_em() as f32 * size
    }

    /// Splits `text` into lines no wider than `max_width`, breaking at whitespace and, for a
    /// word longer than a whole line, inside the word.
    pub(super) fn wrap(
        &self,
        text: &str,
        weight: Weight,
        size: f32,
        max_width: f32,
    ) -> Vec<String> {
        // Words are shaped once each and lines measured as sums: shaping every growing
        // candidate line made long tables quadratic. Kerning across a space is negligible.
        let space = self.width(" ", weight, size);
        let mut lines = Vec::new();
        let mut current = String::new();
        let mut current_width = 0.0;
        for word in text.split_whitespace() {
            let word_width = self.width(word, weight, size);
            if !current.is_empty() && current_width + space + word_width <= max_width {
                current.push(' ');
                current.push_str(word);
                current_width += space + word_width;
                continue;
            }
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            if word_width <= max_width {
                current = word.to_owned();
                current_width = word_width;
            } else {
                let mut pieces = self.break_word(word, weight, size, max_width);
                current = pieces.pop().unwrap_or_default();
                current_width = self.width(&current, weight, size);
                lines.extend(pieces);
            }
        }
        if !current.is_empty() || lines.is_empty() {
            lines.push(current);
        }
        lines
    }

    fn break_word(&self, word: &str, weight: Weight, size: f32, max_width: f32) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut piece = String::new();
        for ch in word.chars() {
            piece.push(ch);
            // Always keep at least one character per piece, so a too-narrow column cannot
            // loop forever.
            if self.width(&piece, weight, size) > max_width && piece.chars().count() > 1 {
                piece.pop();
                pieces.push(std::mem::take(&mut piece));
                piece.push(ch);
            }
        }
        pieces.push(piece);
        pieces
    }

    /// Largest size not above `size` at which `text` fits in `max_width` (for amounts,
    /// which must never be wrapped or clipped).
    pub(super) fn fit_size(&self, text: &str, weight: Weight, size: f32, max_width: f32) -> f32 {
        let width = self.width(text, weight, size);
        if width <= max_width || width <= 0.0 {
            size
        } else {
            size * max_width / width
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character of the scripts the PDF documents, per face: the shipped fonts are a
    /// cut of DejaVu Sans (`assets/README.md`), and a cut that dropped one of these would
    /// print boxes on real invoices.
    #[test]
    fn fonts_cover_latin_greek_and_cyrillic() {
        let ranges = [
            ('\u{20}', '\u{7e}'),   // Basic Latin
            ('\u{a0}', '\u{ff}'),   // Latin-1 Supplement
            ('\u{100}', '\u{17f}'), // Latin Extended-A (Polish, Czech, Turkish, ...)
            ('\u{391}', '\u{3a1}'), // Greek capitals (U+03A2 is unassigned)
            ('\u{3a3}', '\u{3ce}'), // Greek capitals, tonos and small letters
            ('\u{400}', '\u{45f}'), // Cyrillic
        ];
        let symbols = "€£¥₹₽₴₺₩¢–—‘’‚“”„…•‰№™−";
        let chars = ranges
            .iter()
            .flat_map(|&(first, last)| first..=last)
            .chain(symbols.chars());
        for face in [REGULAR_TTF, BOLD_TTF] {
            let face = Face::from_slice(face, 0).unwrap();
            let missing: String = chars
                .clone()
                .filter(|&ch| face.glyph_index(ch).is_none())
                .collect();
            assert!(missing.is_empty(), "no glyph for {missing:?}");
        }
        // What the cut left out really is out: these tests would pass vacuously on an empty
        // `chars` iterator or a font that maps everything.
        let regular = Face::from_slice(REGULAR_TTF, 0).unwrap();
        assert!(regular.glyph_index('\u{5d0}').is_none(), "Hebrew alef");
        assert!(regular.glyph_index('\u{627}').is_none(), "Arabic alef");
    }

    #[test]
    fn widths_scale_with_size_and_weight() {
        let m = Measurer::new().unwrap();
        let w10 = m.width("Invoice", Weight::Regular, 10.0);
        assert!(w10 > 20.0 && w10 < 60.0, "{w10}");
        assert!((m.width("Invoice", Weight::Regular, 20.0) - 2.0 * w10).abs() < 0.01);
        assert!(m.width("Invoice", Weight::Bold, 10.0) > w10);
        assert_eq!(m.width("", Weight::Regular, 10.0), 0.0);
    }

    #[test]
    fn wraps_words_and_breaks_long_ones() {
        let m = Measurer::new().unwrap();
        let text = "Zażółć gęślą jaźń — Ελληνικά κείμενα — Съешь же ещё этих мягких булок";
        let lines = m.wrap(text, Weight::Regular, 10.0, 100.0);
        assert!(lines.len() > 2);
        for line in &lines {
            assert!(m.width(line, Weight::Regular, 10.0) <= 100.0, "{line}");
        }
        assert_eq!(lines.join(" "), text);

        let long = "x".repeat(200);
        let lines = m.wrap(&long, Weight::Regular, 10.0, 50.0);
        assert!(lines.len() > 3);
        assert_eq!(lines.concat(), long);

        assert_eq!(m.wrap("", Weight::Regular, 10.0, 50.0), vec![String::new()]);
        assert_eq!(
            m.wrap("abc", Weight::Regular, 10.0, 0.1),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn fit_size_shrinks_only_when_needed() {
        let m = Measurer::new().unwrap();
        assert_eq!(m.fit_size("1.00", Weight::Regular, 9.0, 100.0), 9.0);
        let size = m.fit_size("92,233,720,368,547,758.07", Weight::Regular, 9.0, 60.0);
        assert!(size < 9.0);
        assert!(m.width("92,233,720,368,547,758.07", Weight::Regular, size) <= 60.01);
    }
}
