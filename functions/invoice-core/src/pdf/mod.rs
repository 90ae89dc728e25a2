//! Deterministic A4 invoice PDFs (feature `pdf`).
//!
//! Rendering uses krilla, which embeds fonts as subsets (only the glyphs used, with a
//! `ToUnicode` map so text can be extracted and searched) and writes no timestamps; its
//! document ID is a hash of the content. The same invoice therefore always yields the same
//! bytes, which makes re-delivered stream records idempotent.
//!
//! The font is DejaVu Sans (regular and bold), shipped in `assets/` with its licence, cut down
//! to Latin with diacritics, Greek and Cyrillic (`assets/README.md`: the rest was a third of
//! generate-pdf's zip). Text is drawn left to right without bidi reordering, and characters
//! outside the font (Arabic, Hebrew, CJK, emoji) show as empty boxes.

mod layout;
mod text;

use krilla::Document;
use krilla::color::luma;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, TextDirection};

use crate::model::Invoice;
use layout::{Align, Op, PAGE_HEIGHT, PAGE_WIDTH};
use text::{Measurer, Weight};

/// The party issuing the invoice, printed in the "From" block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seller {
    pub name: String,
    pub address: Vec<String>,
}

impl Default for Seller {
    fn default() -> Self {
        Self {
            name: "Invoice App".to_owned(),
            address: Vec::new(),
        }
    }
}

impl Seller {
    /// From `SELLER_NAME` and `SELLER_ADDRESS` (lines separated by `|` or newlines), each
    /// optional.
    pub fn from_env() -> Self {
        let mut seller = Self::default();
        if let Some(name) = std::env::var("SELLER_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            seller.name = name.trim().to_owned();
        }
        if let Ok(address) = std::env::var("SELLER_ADDRESS") {
            seller.address = address
                .split(['|', '\n'])
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
        }
        seller
    }
}

/// Why rendering failed. Only a broken build (bad embedded font) or a krilla limit can cause
/// it; validated invoices do not.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("embedded font cannot be loaded")]
    Font,
    #[error("PDF serialization failed: {0}")]
    Serialize(String),
}

/// Renders the invoice as a PDF. Deterministic: same invoice and seller, same bytes.
pub fn render(invoice: &Invoice, seller: &Seller) -> Result<Vec<u8>, PdfError> {
    let measurer = Measurer::new().ok_or(PdfError::Font)?;
    let regular = Font::new(text::REGULAR_TTF.into(), 0).ok_or(PdfError::Font)?;
    let bold = Font::new(text::BOLD_TTF.into(), 0).ok_or(PdfError::Font)?;
    let pages = layout::layout(invoice, seller, &measurer);

    let mut document = Document::new();
    document.set_metadata(
        Metadata::new()
            .title(format!("Invoice {}", invoice.invoice_id))
            .creator("invoice-app".to_owned())
            .language("en".to_owned()),
    );
    let settings = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT)
        .ok_or_else(|| PdfError::Serialize("invalid page size".into()))?;
    for ops in pages {
        let mut page = document.start_page_with(settings.clone());
        let mut surface = page.surface();
        for op in ops {
            match op {
                Op::Text {
                    x,
                    y,
                    size,
                    weight,
                    align,
                    grey,
                    text,
                } => {
                    if text.is_empty() {
                        continue;
                    }
                    let x = match align {
                        Align::Left => x,
                        Align::Right => x - measurer.width(&text, weight, size),
                    };
                    let font = match weight {
                        Weight::Regular => regular.clone(),
                        Weight::Bold => bold.clone(),
                    };
                    surface.set_stroke(None);
                    surface.set_fill(Some(fill(grey)));
                    surface.draw_text(
                        Point::from_xy(x, y),
                        font,
                        size,
                        &text,
                        false,
                        // Auto would pick the direction of the first strong character and
                        // reverse a whole mixed line ("مرحبا ... Invoice" drawn backwards).
                        // Invoices are laid out left to right; right-to-left runs are drawn
                        // in logical order (there is no bidi reordering).
                        TextDirection::LeftToRight,
                    );
                }
                Op::Rect { x, y, w, h, grey } => {
                    let Some(rect) = Rect::from_xywh(x, y, w, h) else {
                        continue;
                    };
                    let mut builder = PathBuilder::new();
                    builder.push_rect(rect);
                    if let Some(path) = builder.finish() {
                        surface.set_stroke(None);
                        surface.set_fill(Some(fill(grey)));
                        surface.draw_path(&path);
                    }
                }
                Op::Rule { x1, x2, y, width } => {
                    let mut builder = PathBuilder::new();
                    builder.move_to(x1, y);
                    builder.line_to(x2, y);
                    if let Some(path) = builder.finish() {
                        surface.set_fill(None);
                        surface.set_stroke(Some(Stroke {
                            paint: luma::Color::new(150).into(),
                            width,
                            ..Stroke::default()
                        }));
                        surface.draw_path(&path);
                    }
                }
            }
        }
        surface.finish();
        page.finish();
    }
    document
        .finish()
        .map_err(|err| PdfError::Serialize(format!("{err:?}")))
}

fn fill(grey: u8) -> Fill {
    Fill {
        paint: luma::Color::new(grey).into(),
        ..Fill::default()
    }
}
