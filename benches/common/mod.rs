//! What several benches share.

/// A TARI payment notice: subject, markdown and due date from the CSV's columns `nome`, `anno`,
/// `importo`, `scadenza`. Each bench appends its own keys (payment data, filter).
pub const TARI_MESSAGE: &str = r#"
subject = "TARI {{anno}}: il tuo avviso di {{importo}} euro"
markdown = """
Gentile {{nome}},

è disponibile l'avviso di pagamento della **TARI {{anno}}**, di importo pari a {{importo}} euro,
con scadenza il {{scadenza}}. Puoi pagarlo dall'app IO.
"""
due_date = "{{scadenza}}"
"#;
