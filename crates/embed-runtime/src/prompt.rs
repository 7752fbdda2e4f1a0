//! The prompts EmbeddingGemma was trained with.
//!
//! A GGUF file carries no prompt table (llama.cpp's converter drops
//! `config_sentence_transformers.json`), so the 14 named prompts of the model's
//! sentence-transformers configuration live here. A prompt is plain text prepended to every input
//! and is part of the mean pool, exactly as sentence-transformers does it.

use std::borrow::Cow;

/// The named prompts of `config_sentence_transformers.json`, in file order.
pub const NAMED_PROMPTS: [(&str, &str); 14] = [
    ("query", "task: search result | query: "),
    ("document", "title: none | text: "),
    ("BitextMining", "task: search result | query: "),
    ("Clustering", "task: clustering | query: "),
    ("Classification", "task: classification | query: "),
    ("InstructionRetrieval", "task: code retrieval | query: "),
    ("MultilabelClassification", "task: classification | query: "),
    ("PairClassification", "task: sentence similarity | query: "),
    ("Reranking", "task: search result | query: "),
    ("Retrieval", "task: search result | query: "),
    ("Retrieval-query", "task: search result | query: "),
    ("Retrieval-document", "title: none | text: "),
    ("STS", "task: sentence similarity | query: "),
    ("Summarization", "task: summarization | query: "),
];

/// The text put in front of every input before tokenization.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Prompt {
    /// No prompt: the text is embedded as given (sentence-transformers' default for this model).
    #[default]
    None,
    /// One of the model's named prompts, e.g. `query` or `STS`.
    Named(&'static str),
    /// Any other prefix.
    Custom(String),
}

impl Prompt {
    /// Looks a prompt up by its sentence-transformers name (case-sensitive, as the config is).
    pub fn named(name: &str) -> Option<Prompt> {
        NAMED_PROMPTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, _)| Prompt::Named(n))
    }

    /// The prefix text this prompt stands for.
    pub fn prefix(&self) -> Cow<'_, str> {
        match self {
            Prompt::None => Cow::Borrowed(""),
            Prompt::Named(name) => Cow::Borrowed(
                NAMED_PROMPTS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, p)| *p)
                    .unwrap_or(""),
            ),
            Prompt::Custom(s) => Cow::Borrowed(s.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_prompts_resolve_to_the_config_text() {
        assert_eq!(
            Prompt::named("query").unwrap().prefix(),
            "task: search result | query: "
        );
        assert_eq!(
            Prompt::named("document").unwrap().prefix(),
            "title: none | text: "
        );
        assert_eq!(
            Prompt::named("STS").unwrap().prefix(),
            "task: sentence similarity | query: "
        );
        assert!(Prompt::named("sts").is_none(), "names are case-sensitive");
        assert_eq!(Prompt::None.prefix(), "");
        assert_eq!(Prompt::Custom("x: ".into()).prefix(), "x: ");
    }

    #[test]
    fn every_name_is_unique() {
        let mut names: Vec<_> = NAMED_PROMPTS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMED_PROMPTS.len());
    }
}
