//! Renders an invoice JSON file (the API body format) to a PDF file, to look at the layout.
//!
//! ```text
//! cargo run -p invoice-core --example render_sample -- tests/fixtures/unicode_invoice.json out.pdf
//! ```

use invoice_core::pdf::{Seller, render};
use invoice_core::validate::parse_invoice;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(input), Some(output)) = (args.first(), args.get(1)) else {
        eprintln!("usage: render_sample <invoice.json> <out.pdf>");
        std::process::exit(2);
    };
    let body = std::fs::read(input).unwrap_or_else(|err| panic!("{input}: {err}"));
    let invoice = match parse_invoice(&body) {
        Ok(invoice) => invoice,
        Err(err) => {
            eprintln!("{}", err.body());
            std::process::exit(1);
        }
    };
    let pdf = render(&invoice, &Seller::from_env()).expect("render");
    std::fs::write(output, &pdf).unwrap_or_else(|err| panic!("{output}: {err}"));
    println!("{output}: {} bytes", pdf.len());
}
