//! ISO 4217 currencies and formatting of integer minor units.
//!
//! Amounts are never floats: the API carries minor units (cents) and this module only decides
//! where the decimal separator goes, which depends on the currency (JPY has none, KWD three).

/// Active ISO 4217 codes with their minor-unit exponent. Funds and precious metals are left out
/// because nobody invoices in them; an unknown code is a client mistake we want to report.
#[rustfmt::skip]
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BRL", 2), ("BSD", 2),
    ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2), ("CHF", 2),
    ("CLP", 0), ("CNY", 2), ("COP", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2),
    ("DJF", 0), ("DKK", 2), ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2),
    ("EUR", 2), ("FJD", 2), ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2),
    ("GMD", 2), ("GNF", 0), ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2),
    ("HUF", 2), ("IDR", 2), ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0),
    ("JMD", 2), ("JOD", 3), ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0),
    ("KPW", 2), ("KRW", 0), ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2),
    ("LKR", 2), ("LRD", 2), ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2),
    ("MKD", 2), ("MMK", 2), ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2),
    ("MWK", 2), ("MXN", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2),
    ("NOK", 2), ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2),
    ("PHP", 2), ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2),
    ("RUB", 2), ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2),
    ("SGD", 2), ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2),
    ("SVC", 2), ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3),
    ("TOP", 2), ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0),
    ("USD", 2), ("UYU", 2), ("UZS", 2), ("VED", 2), ("VES", 2), ("VND", 0), ("VUV", 0),
    ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0), ("XPF", 0), ("YER", 2),
    ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

/// Exponent used when an invoice has no currency (old clients): cents, like most currencies.
const DEFAULT_EXPONENT: u8 = 2;

/// Every accepted currency code, in the order of the table (the OpenAPI document lists them).
pub fn codes() -> impl Iterator<Item = &'static str> {
    CURRENCIES.iter().map(|(code, _)| *code)
}

/// Minor-unit exponent of an ISO 4217 code, `None` if the code is not a known active currency.
pub fn exponent(code: &str) -> Option<u8> {
    CURRENCIES
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, exp)| *exp)
}

/// Formats minor units with thousands separators, e.g. `123456` EUR -> `1,234.56 EUR`.
///
/// Without a currency the amount is shown with two decimals and no code rather than guessing
/// a currency the client never named.
pub fn format_amount(minor: i64, currency: Option<&str>) -> String {
    let mut out = format_minor(minor, currency);
    if let Some(code) = currency {
        out.push(' ');
        out.push_str(code);
    }
    out
}

/// Like [`format_amount`] without the currency code, for table cells under a titled column.
pub fn format_minor(minor: i64, currency: Option<&str>) -> String {
    let exp = currency.and_then(exponent).unwrap_or(DEFAULT_EXPONENT);
    // unsigned_abs: i64::MIN has no positive counterpart in i64.
    let abs = minor.unsigned_abs();
    let scale = 10u64.pow(u32::from(exp));
    let (units, fraction) = (abs / scale, abs % scale);
    let mut out = String::new();
    if minor < 0 {
        out.push('-');
    }
    out.push_str(&group_thousands(units));
    if exp > 0 {
        out.push('.');
        out.push_str(&format!("{fraction:0width$}", width = usize::from(exp)));
    }
    out
}

fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_codes() {
        assert_eq!(exponent("EUR"), Some(2));
        assert_eq!(exponent("JPY"), Some(0));
        assert_eq!(exponent("KWD"), Some(3));
        assert_eq!(exponent("eur"), None);
        assert_eq!(exponent("XXX"), None);
    }

    #[test]
    fn formats_per_currency_exponent() {
        assert_eq!(format_amount(123_456, Some("EUR")), "1,234.56 EUR");
        assert_eq!(format_amount(5, Some("PLN")), "0.05 PLN");
        assert_eq!(format_amount(1_234_567, Some("JPY")), "1,234,567 JPY");
        assert_eq!(format_amount(1_001, Some("KWD")), "1.001 KWD");
        assert_eq!(format_amount(100, None), "1.00");
        assert_eq!(format_amount(0, Some("USD")), "0.00 USD");
        assert_eq!(format_amount(-250, Some("USD")), "-2.50 USD");
        assert_eq!(format_amount(i64::MIN, None), "-92,233,720,368,547,758.08");
    }

    #[test]
    fn table_is_sorted_and_well_formed() {
        for pair in CURRENCIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, exp) in CURRENCIES {
            assert!(code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(*exp <= 3);
        }
    }
}
