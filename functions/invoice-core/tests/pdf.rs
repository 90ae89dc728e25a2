//! PDF rendering checked with a PDF parser: content, Unicode, pagination, determinism and
//! font subsetting.

use invoice_core::pdf::{Seller, render};
use invoice_core::validate::parse_invoice;
use invoice_core::{Invoice, LineItem};
use lopdf::{Document, Object};

fn fixture(name: &str) -> Invoice {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let body = std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    parse_invoice(&body).expect("fixture is a valid invoice")
}

fn seller() -> Seller {
    Seller {
        name: "Acme Faktury S.A.".into(),
        address: vec!["ul. Piękna 1".into(), "00-001 Warszawa".into()],
    }
}

/// Text of every page, in page order, with whitespace collapsed so assertions do not depend
/// on how the extractor splits runs.
fn pages_text(pdf: &[u8]) -> Vec<String> {
    let doc = Document::load_mem(pdf).expect("parseable PDF");
    let pages = doc.get_pages();
    pages
        .keys()
        .map(|&n| {
            let text = doc.extract_text(&[n]).expect("extractable text");
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn many_items(n: usize) -> Invoice {
    let items: Vec<LineItem> = (0..n)
        .map(|i| LineItem {
            description: format!("Item number {} with a moderately long description", i + 1),
            quantity: 1,
            unit_price: 100,
        })
        .collect();
    Invoice {
        invoice_id: format!("MANY-{n}"),
        customer_id: "CUST9".into(),
        invoice_date: "2024-01-31".into(),
        product_list: vec![],
        total_amount: 100 * n as i64,
        currency: Some("EUR".into()),
        customer_name: None,
        line_items: Some(items),
        tax_amount: None,
    }
}

#[test]
fn legacy_invoice_shows_id_customer_products_and_total() {
    let pdf = render(&fixture("legacy_invoice.json"), &seller()).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    let pages = pages_text(&pdf);
    assert_eq!(pages.len(), 1);
    let text = &pages[0];
    for expected in [
        "INVOICE",
        "INV42",
        "CUST3",
        "2023-11-02",
        "Laptop",
        "Mouse",
        "USB-C cable",
        "Total",
        "1,299.00",
        "Acme Faktury S.A.",
        "Page 1 of 1",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from {text:?}"
        );
    }
}

#[test]
fn polish_greek_and_cyrillic_round_trip() {
    let pdf = render(&fixture("unicode_invoice.json"), &seller()).unwrap();
    let text = pages_text(&pdf).join(" ");
    for expected in [
        "FV/2024/05/001",
        "Zażółć Gęślą Jaźń Sp. z o.o.",
        "Wycieczka po Łodzi",
        "Ελαιόλαδο εξαιρετικό παρθένο",
        "Пельмени сибирские",
        "Crème brûlée",
        "ul. Piękna 1",
        // Line amounts, subtotal, tax and total in PLN.
        "300.00",
        "74.97",
        "457.47 PLN",
        "91.49 PLN",
        "548.96 PLN",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from {text:?}"
        );
    }
}

#[test]
fn same_invoice_gives_identical_bytes() {
    let invoice = fixture("unicode_invoice.json");
    let first = render(&invoice, &seller()).unwrap();
    let second = render(&invoice, &seller()).unwrap();
    assert_eq!(first, second);

    let mut changed = invoice.clone();
    changed.customer_name = Some("Someone else".into());
    assert_ne!(render(&changed, &seller()).unwrap(), first);
}

#[test]
fn many_line_items_flow_onto_numbered_pages() {
    let one = pages_text(&render(&many_items(1), &seller()).unwrap());
    assert_eq!(one.len(), 1);

    let pdf = render(&many_items(200), &seller()).unwrap();
    let pages = pages_text(&pdf);
    assert!(pages.len() >= 4, "200 items on only {} pages", pages.len());
    let count = pages.len();
    for (i, page) in pages.iter().enumerate() {
        assert!(
            page.contains(&format!("Page {} of {count}", i + 1)),
            "page {i}: {page}"
        );
    }
    let all = pages.join(" ");
    for n in [1, 57, 200] {
        assert!(
            all.contains(&format!("Item number {n} with")),
            "item {n} missing"
        );
    }
    // The total comes once, after the last item.
    assert!(pages[count - 1].contains("200.00 EUR"));
    assert!(!pages[0].contains("200.00 EUR"));
    assert!(pages[1].contains("(continued)"));
}

#[test]
fn fonts_are_embedded_as_subsets() {
    let pdf = render(&fixture("unicode_invoice.json"), &seller()).unwrap();
    let doc = Document::load_mem(&pdf).unwrap();
    let mut embedded = 0;
    for object in doc.objects.values() {
        let Ok(dict) = object.as_dict() else { continue };
        if dict.get(b"Type").and_then(Object::as_name).ok() != Some(b"FontDescriptor".as_slice()) {
            continue;
        }
        let name = dict.get(b"FontName").and_then(Object::as_name).unwrap();
        let name = String::from_utf8_lossy(name);
        // A subset font name carries a six-letter tag: "ABCDEF+DejaVuSans".
        let (tag, base) = name.split_once('+').expect("subset tag");
        assert_eq!(tag.len(), 6);
        assert!(tag.bytes().all(|b| b.is_ascii_uppercase()), "{name}");
        assert!(base.starts_with("DejaVuSans"), "{name}");
        let file = dict.get(b"FontFile2").expect("embedded TrueType program");
        let stream = doc
            .get_object(file.as_reference().unwrap())
            .unwrap()
            .as_stream()
            .unwrap();
        // The whole DejaVu Sans is ~750 KB; a subset for one invoice is a few KB.
        assert!(
            stream.content.len() < 100_000,
            "font program of {} bytes",
            stream.content.len()
        );
        embedded += 1;
    }
    assert_eq!(embedded, 2, "regular and bold");
    assert!(pdf.len() < 150_000, "PDF of {} bytes", pdf.len());
}

#[test]
fn extreme_but_valid_values_render() {
    let mut invoice = many_items(1);
    invoice.invoice_id = "X".repeat(128);
    invoice.customer_name = Some("W".repeat(500));
    if let Some(items) = invoice.line_items.as_mut() {
        items[0].description = "Ж".repeat(500);
        items[0].unit_price = i64::MAX;
        items[0].quantity = 1;
    }
    invoice.total_amount = i64::MAX;
    invoice.currency = None;
    let pdf = render(&invoice, &Seller::default()).unwrap();
    let text = pages_text(&pdf).join(" ");
    assert!(text.contains("92,233,720,368,547,758.07"), "{text}");
}

#[test]
fn text_outside_the_font_renders_without_failing() {
    // DejaVu Sans has no CJK or emoji glyphs: they become .notdef boxes, but rendering must
    // not fail, and the Latin text around them must survive.
    let mut invoice = many_items(1);
    invoice.customer_name = Some("株式会社テスト 🧾 Test".into());
    if let Some(items) = invoice.line_items.as_mut() {
        items[0].description = "مرحبا עברית 中文 — mixed scripts".into();
    }
    let pdf = render(&invoice, &seller()).unwrap();
    let text = pages_text(&pdf).join(" ");
    assert!(
        text.contains("Test") && text.contains("mixed scripts"),
        "{text}"
    );
}
