//! Named intermediate values of a forward pass, for golden tests and debugging.

/// A point in the forward pass whose values a [`Tracer`] can observe.
///
/// Row layouts: one row per token of the text (`tokens × width`), except the per-text points
/// ([`TracePoint::Pooled`] onwards, one row) and [`TracePoint::AttnProbs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TracePoint {
    /// Token embeddings times `sqrt(d)`: the input of layer 0.
    Embedding,
    /// `rms_norm(x) · attn_norm` of a layer.
    AttnNorm(usize),
    /// Query projection (`tokens × heads·head_dim`).
    Q(usize),
    /// Key projection.
    K(usize),
    /// Value projection.
    V(usize),
    /// Queries after the per-head RMS norm.
    QNormed(usize),
    /// Keys after the per-head RMS norm.
    KNormed(usize),
    /// Queries after RoPE.
    QRope(usize),
    /// Keys after RoPE.
    KRope(usize),
    /// Softmax probabilities of query block `block` (rows: token-major, then head; columns:
    /// the keys the block can see, starting at `first_key`).
    AttnProbs {
        /// Layer.
        layer: usize,
        /// Query block index.
        block: usize,
        /// Index of the first key column.
        first_key: usize,
    },
    /// Attention output before the output projection.
    AttnOut(usize),
    /// Output projection.
    OProj(usize),
    /// `rms_norm(o_proj) · post_attention_norm`.
    PostAttnNorm(usize),
    /// Residual stream after the attention block.
    ResidualAfterAttn(usize),
    /// `rms_norm(x) · ffn_norm`.
    FfnNorm(usize),
    /// Gate projection.
    Gate(usize),
    /// Up projection.
    Up(usize),
    /// `gelu_tanh(gate) · up`.
    DownIn(usize),
    /// Down projection.
    Down(usize),
    /// `rms_norm(down) · post_ffw_norm`.
    PostFfwNorm(usize),
    /// Layer output (residual stream).
    LayerOut(usize),
    /// After the final norm.
    FinalNorm,
    /// Mean over tokens.
    Pooled,
    /// First Dense layer output.
    Dense2,
    /// Second Dense layer output.
    Dense3,
    /// The unit-length embedding.
    Normalized,
}

/// Receives intermediate values of a single-text forward pass
/// ([`crate::GemmaModel::trace_text`]).
pub trait Tracer {
    /// Called once per point with the values described at [`TracePoint`].
    fn record(&mut self, point: TracePoint, values: &[f32]);
}

impl<F: FnMut(TracePoint, &[f32])> Tracer for F {
    fn record(&mut self, point: TracePoint, values: &[f32]) {
        self(point, values)
    }
}

/// The tracer of ordinary calls: records nothing, costs nothing.
pub(crate) struct NoTrace;

/// Statically known whether tracing is on, so the ordinary path carries no tracing work.
pub(crate) trait MaybeTrace {
    const ON: bool;
    fn record(&mut self, point: TracePoint, values: &[f32]);
}

impl MaybeTrace for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn record(&mut self, _: TracePoint, _: &[f32]) {}
}

/// Adapts a caller's [`Tracer`].
pub(crate) struct On<'a>(pub &'a mut dyn Tracer);

impl MaybeTrace for On<'_> {
    const ON: bool = true;
    fn record(&mut self, point: TracePoint, values: &[f32]) {
        self.0.record(point, values);
    }
}
