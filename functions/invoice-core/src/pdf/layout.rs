//! Page layout of an invoice: a pure function from invoice to pages of drawing operations.
//!
//! Keeping layout apart from PDF writing lets pagination be decided (and page numbers
//! "Page i of n" known) before anything is drawn, and lets tests inspect positions.

use super::Seller;
use super::text::{Measurer, Weight};
use crate::model::Invoice;
use crate::money;

/// A4 in points.
pub(super) const PAGE_WIDTH: f32 = 595.28;
pub(super) const PAGE_HEIGHT: f32 = 841.89;
const MARGIN: f32 = 50.0;
const CONTENT_WIDTH: f32 = PAGE_WIDTH - 2.0 * MARGIN;
const RIGHT: f32 = PAGE_WIDTH - MARGIN;
/// Lowest baseline for table rows; below it are the footer and page number.
const BODY_BOTTOM: f32 = PAGE_HEIGHT - 70.0;
const FOOTER_BASELINE: f32 = PAGE_HEIGHT - 35.0;

const BODY_SIZE: f32 = 9.5;
const LINE_HEIGHT: f32 = 12.5;
const ROW_PADDING: f32 = 5.0;
const HEADER_ROW_HEIGHT: f32 = 20.0;

const GREY: u8 = 110;
const BAND: u8 = 235;

/// Horizontal alignment relative to the operation's `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Align {
    Left,
    Right,
}

/// One drawing operation in page coordinates (origin top left, y down, points).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Op {
    Text {
        x: f32,
        /// Baseline.
        y: f32,
        size: f32,
        weight: Weight,
        align: Align,
        /// Grey level, 0 = black.
        grey: u8,
        text: String,
    },
    /// Filled rectangle in the given grey level.
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        grey: u8,
    },
    /// Horizontal rule.
    Rule {
        x1: f32,
        x2: f32,
        y: f32,
        width: f32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Column {
    title: &'static str,
    x: f32,
    width: f32,
    align: Align,
}

impl Column {
    /// Anchor x for text with this column's alignment.
    fn anchor(&self) -> f32 {
        match self.align {
            Align::Left => self.x + 4.0,
            Align::Right => self.x + self.width - 4.0,
        }
    }

    fn inner_width(&self) -> f32 {
        self.width - 8.0
    }
}

/// One table row: wrapped description lines plus single-line cells.
struct Row {
    number: String,
    description: Vec<String>,
    /// (text, column index) of right-aligned numeric cells.
    numbers: Vec<(String, usize)>,
}

impl Row {
    fn height(&self) -> f32 {
        self.description.len().max(1) as f32 * LINE_HEIGHT + 2.0 * ROW_PADDING
    }
}

fn columns(priced: bool) -> Vec<Column> {
    let mut cols = vec![Column {
        title: "#",
        x: MARGIN,
        width: 28.0,
        align: Align::Right,
    }];
    if priced {
        let (qty, unit, amount) = (50.0, 90.0, 100.0);
        let desc = CONTENT_WIDTH - 28.0 - qty - unit - amount;
        let mut x = MARGIN + 28.0;
        for (title, width, align) in [
            ("Description", desc, Align::Left),
            ("Qty", qty, Align::Right),
            ("Unit price", unit, Align::Right),
            ("Amount", amount, Align::Right),
        ] {
            cols.push(Column {
                title,
                x,
                width,
                align,
            });
            x += width;
        }
    } else {
        cols.push(Column {
            title: "Description",
            x: MARGIN + 28.0,
            width: CONTENT_WIDTH - 28.0,
            align: Align::Left,
        });
    }
    cols
}

fn text(x: f32, y: f32, size: f32, weight: Weight, align: Align, value: impl Into<String>) -> Op {
    Op::Text {
        x,
        y,
        size,
        weight,
        align,
        grey: 0,
        text: value.into(),
    }
}

fn grey_text(x: f32, y: f32, size: f32, align: Align, value: impl Into<String>) -> Op {
    Op::Text {
        x,
        y,
        size,
        weight: Weight::Regular,
        align,
        grey: GREY,
        text: value.into(),
    }
}

/// Lays out the invoice; returns one list of operations per page, footers included.
pub(super) fn layout(invoice: &Invoice, seller: &Seller, m: &Measurer) -> Vec<Vec<Op>> {
    let cols = columns(invoice.line_items.is_some());
    let rows = rows(invoice, &cols, m);
    let table = Table {
        cols: &cols,
        currency: invoice.currency.as_deref(),
    };

    let mut pages: Vec<Vec<Op>> = Vec::new();
    let mut page = Vec::new();
    let mut y = first_page_header(invoice, seller, m, &mut page);
    y = table.header(&mut page, y);
    for row in &rows {
        if y + row.height() > BODY_BOTTOM {
            pages.push(std::mem::take(&mut page));
            y = continuation_header(invoice, &mut page);
            y = table.header(&mut page, y);
        }
        y = table.row(row, m, &mut page, y);
    }

    // Totals: kept together, on a new page if they do not fit under the last row.
    let totals = totals(invoice);
    let totals_height = 14.0 + totals.len() as f32 * 16.0;
    if y + totals_height > BODY_BOTTOM {
        pages.push(std::mem::take(&mut page));
        y = continuation_header(invoice, &mut page);
    }
    draw_totals(&totals, m, &mut page, y);
    pages.push(page);

    let count = pages.len();
    for (i, page) in pages.iter_mut().enumerate() {
        footer(invoice, i + 1, count, page);
    }
    pages
}

/// The line-item table's columns and the currency its money columns are titled with.
struct Table<'a> {
    cols: &'a [Column],
    currency: Option<&'a str>,
}

impl Table<'_> {
    /// The shaded title row; returns the y under it. Repeated on every page the table spans.
    fn header(&self, page: &mut Vec<Op>, y: f32) -> f32 {
        page.push(Op::Rect {
            x: MARGIN,
            y,
            w: CONTENT_WIDTH,
            h: HEADER_ROW_HEIGHT,
            grey: BAND,
        });
        for col in self.cols {
            let title = match (col.title, self.currency) {
                ("Unit price" | "Amount", Some(code)) => format!("{} ({code})", col.title),
                (title, _) => title.to_owned(),
            };
            page.push(text(
                col.anchor(),
                y + 13.5,
                9.0,
                Weight::Bold,
                col.align,
                title,
            ));
        }
        y + HEADER_ROW_HEIGHT
    }

    /// One row at `y` and the rule under it; returns the y under the rule.
    fn row(&self, row: &Row, m: &Measurer, page: &mut Vec<Op>, y: f32) -> f32 {
        let cols = self.cols;
        let baseline = y + ROW_PADDING + LINE_HEIGHT - 3.0;
        page.push(text(
            cols[0].anchor(),
            baseline,
            BODY_SIZE,
            Weight::Regular,
            Align::Right,
            row.number.clone(),
        ));
        for (i, line) in row.description.iter().enumerate() {
            page.push(text(
                cols[1].anchor(),
                baseline + i as f32 * LINE_HEIGHT,
                BODY_SIZE,
                Weight::Regular,
                Align::Left,
                line.clone(),
            ));
        }
        for (value, col) in &row.numbers {
            let col = cols[*col];
            let size = m.fit_size(value, Weight::Regular, BODY_SIZE, col.inner_width());
            page.push(text(
                col.anchor(),
                baseline,
                size,
                Weight::Regular,
                Align::Right,
                value.clone(),
            ));
        }
        let y = y + row.height();
        page.push(Op::Rule {
            x1: MARGIN,
            x2: RIGHT,
            y,
            width: 0.4,
        });
        y
    }
}

/// The totals block, right-aligned under the table starting at `y`; the bold line (the
/// grand total) gets a rule above it.
fn draw_totals(totals: &[(String, String, bool)], m: &Measurer, page: &mut Vec<Op>, y: f32) {
    let mut y = y + 8.0;
    let label_x = RIGHT - 190.0;
    for (i, (label, amount, bold)) in totals.iter().enumerate() {
        y += 16.0;
        let weight = if *bold { Weight::Bold } else { Weight::Regular };
        let size = if *bold { 11.0 } else { 10.0 };
        if *bold && i > 0 {
            page.push(Op::Rule {
                x1: label_x,
                x2: RIGHT,
                y: y - 12.0,
                width: 0.8,
            });
        }
        page.push(text(label_x, y, size, weight, Align::Left, label.clone()));
        let size = m.fit_size(amount, weight, size, 120.0);
        page.push(text(
            RIGHT - 4.0,
            y,
            size,
            weight,
            Align::Right,
            amount.clone(),
        ));
    }
}

/// The rule, invoice id and "Page i of n" at the foot of page `number`.
fn footer(invoice: &Invoice, number: usize, count: usize, page: &mut Vec<Op>) {
    page.push(Op::Rule {
        x1: MARGIN,
        x2: RIGHT,
        y: FOOTER_BASELINE - 12.0,
        width: 0.4,
    });
    page.push(grey_text(
        MARGIN,
        FOOTER_BASELINE,
        8.0,
        Align::Left,
        format!("Invoice {}", invoice.invoice_id),
    ));
    page.push(grey_text(
        RIGHT,
        FOOTER_BASELINE,
        8.0,
        Align::Right,
        format!("Page {number} of {count}"),
    ));
}

/// Title, invoice facts, seller and customer blocks. Returns the y where the table starts.
fn first_page_header(invoice: &Invoice, seller: &Seller, m: &Measurer, page: &mut Vec<Op>) -> f32 {
    page.push(text(
        MARGIN,
        MARGIN + 22.0,
        24.0,
        Weight::Bold,
        Align::Left,
        "INVOICE",
    ));

    // Facts block, right-aligned labels and values; values may wrap if an ID is very long.
    let mut facts = vec![
        ("Invoice ID", invoice.invoice_id.clone()),
        ("Date", invoice.date_only().to_owned()),
    ];
    if let Some(code) = &invoice.currency {
        facts.push(("Currency", code.clone()));
    }
    let mut fy = MARGIN + 8.0;
    for (label, value) in facts {
        for (i, line) in m
            .wrap(&value, Weight::Bold, 10.0, 180.0)
            .into_iter()
            .enumerate()
        {
            fy += 14.0;
            if i == 0 {
                page.push(grey_text(
                    RIGHT - 190.0,
                    fy,
                    9.0,
                    Align::Left,
                    format!("{label}:"),
                ));
            }
            page.push(text(RIGHT, fy, 10.0, Weight::Bold, Align::Right, line));
        }
    }

    // Seller (left) and customer (right) blocks side by side.
    let block_top = (MARGIN + 60.0).max(fy + 14.0);
    let half = CONTENT_WIDTH / 2.0 - 10.0;
    let seller_lines: Vec<(String, Weight)> = std::iter::once((seller.name.clone(), Weight::Bold))
        .chain(seller.address.iter().map(|l| (l.clone(), Weight::Regular)))
        .collect();
    let mut customer_lines = Vec::new();
    if let Some(name) = &invoice.customer_name {
        customer_lines.push((name.clone(), Weight::Bold));
    }
    customer_lines.push((
        format!("Customer ID: {}", invoice.customer_id),
        Weight::Regular,
    ));

    let mut bottom = block_top;
    for (x, title, lines) in [
        (MARGIN, "From", seller_lines),
        (
            MARGIN + CONTENT_WIDTH / 2.0 + 10.0,
            "Bill to",
            customer_lines,
        ),
    ] {
        let mut by = block_top + 10.0;
        page.push(grey_text(x, by, 8.5, Align::Left, title.to_uppercase()));
        by += 4.0;
        for (line, weight) in lines {
            for wrapped in m.wrap(&line, weight, 10.0, half) {
                by += 13.5;
                page.push(text(x, by, 10.0, weight, Align::Left, wrapped));
            }
        }
        bottom = bottom.max(by);
    }
    bottom + 28.0
}

/// Short header on pages after the first. Returns the y where content starts.
fn continuation_header(invoice: &Invoice, page: &mut Vec<Op>) -> f32 {
    page.push(text(
        MARGIN,
        MARGIN + 12.0,
        11.0,
        Weight::Bold,
        Align::Left,
        format!("Invoice {} (continued)", invoice.invoice_id),
    ));
    MARGIN + 30.0
}

fn rows(invoice: &Invoice, cols: &[Column], m: &Measurer) -> Vec<Row> {
    let currency = invoice.currency.as_deref();
    let desc_width = cols[1].inner_width();
    let wrap = |s: &str| m.wrap(s, Weight::Regular, BODY_SIZE, desc_width);
    match &invoice.line_items {
        Some(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| Row {
                number: (i + 1).to_string(),
                description: wrap(&item.description),
                numbers: vec![
                    (item.quantity.to_string(), 2),
                    (money::format_minor(item.unit_price, currency), 3),
                    (
                        item.amount()
                            .map(|a| money::format_minor(a, currency))
                            .unwrap_or_default(),
                        4,
                    ),
                ],
            })
            .collect(),
        None => invoice
            .product_list
            .iter()
            .enumerate()
            .map(|(i, product)| Row {
                number: (i + 1).to_string(),
                description: wrap(product),
                numbers: Vec::new(),
            })
            .collect(),
    }
}

/// (label, formatted amount, emphasised) lines under the table.
fn totals(invoice: &Invoice) -> Vec<(String, String, bool)> {
    let currency = invoice.currency.as_deref();
    let fmt = |amount: i64| money::format_amount(amount, currency);
    let mut lines = Vec::new();
    if let Some(tax) = invoice.tax_amount {
        let subtotal = invoice
            .line_items_subtotal()
            .unwrap_or(invoice.total_amount.saturating_sub(tax));
        lines.push(("Subtotal".to_owned(), fmt(subtotal), false));
        lines.push(("Tax".to_owned(), fmt(tax), false));
    } else if invoice.line_items.is_some() {
        lines.push((
            "Subtotal".to_owned(),
            fmt(invoice
                .line_items_subtotal()
                .unwrap_or(invoice.total_amount)),
            false,
        ));
    }
    lines.push(("Total".to_owned(), fmt(invoice.total_amount), true));
    lines
}
