//! Measures PDF render time and size for invoices with 1 and 200 line items.
//!
//! Run with `cargo run --release -p invoice-core --example render_bench`.

use std::time::{Duration, Instant};

use invoice_core::pdf::{Seller, render};
use invoice_core::{Invoice, LineItem};

fn invoice(items: usize) -> Invoice {
    let line_items: Vec<LineItem> = (0..items)
        .map(|i| LineItem {
            description: format!("Consulting, work package {} — Zażółć gęślą jaźń", i + 1),
            quantity: (i % 7 + 1) as u32,
            unit_price: 1_250 + i as i64 * 10,
        })
        .collect();
    let subtotal: i64 = line_items
        .iter()
        .map(|item| item.unit_price * i64::from(item.quantity))
        .sum();
    let tax = subtotal / 5;
    Invoice {
        invoice_id: format!("BENCH-{items}"),
        customer_id: "CUST1".into(),
        invoice_date: "2024-05-01".into(),
        product_list: vec![],
        total_amount: subtotal + tax,
        currency: Some("EUR".into()),
        customer_name: Some("Ελληνική Εταιρεία".into()),
        line_items: Some(line_items),
        tax_amount: Some(tax),
    }
}

fn main() {
    let seller = Seller::default();
    for items in [1usize, 200] {
        let invoice = invoice(items);
        // Warm-up also brings the font pages into memory, like a warm Lambda.
        let pdf = render(&invoice, &seller).expect("render");
        let runs = 30;
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let start = Instant::now();
                let out = render(&invoice, &seller).expect("render");
                assert_eq!(out.len(), pdf.len());
                start.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "{items:>3} line items: {} bytes, median {:.2} ms, min {:.2} ms, max {:.2} ms ({runs} runs)",
            pdf.len(),
            times[runs / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            times[runs - 1].as_secs_f64() * 1e3,
        );
    }
}
