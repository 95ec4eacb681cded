using System.Runtime.InteropServices;

namespace RLHFSpec.Compute.Engine.Kernels;

/// <summary>
/// Per-row (sample kernel) or per-sample (verify kernel) sampling settings. Mirrored in GLSL by
/// <c>struct SamplingParams</c> in <c>shaders/sampling.glsl</c> (std430, 32 bytes).
/// </summary>
/// <remarks>
/// The warp applied to logits, identically for target p and draft q, in this order:
/// <list type="number">
/// <item>Temperature: <c>Temperature == 0</c> means greedy (argmax over the raw logits; top-k/top-p ignored);
/// otherwise probabilities ∝ exp((logit − max) / Temperature).</item>
/// <item>Top-k (<c>TopK &lt;= 0</c> or ≥ vocab: off): keep tokens whose logit ≥ the k-th largest logit (ties kept).</item>
/// <item>Top-p (<c>TopP &gt;= 1</c>: off): among the kept tokens, keep those whose probability ≥ τ, where τ is the
/// largest value such that the kept mass of {p ≥ τ} is ≥ TopP × (kept mass) (ties at τ kept).</item>
/// </list>
/// Random numbers are Philox-4x32-10 keyed by <c>(SeedLo, SeedHi)</c> with counter
/// <c>(Position, SampleId, stream, index)</c> (see <see cref="Random.RngStreams"/>), so a sample's randomness
/// does not depend on the batch or instance it runs in.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
public struct SamplingParams
{
    public float Temperature;
    public int TopK;
    public float TopP;
    public uint SeedLo;
    public uint SeedHi;
    /// <summary>Identity of the sample (e.g. prompt × samples-per-prompt index); part of the RNG counter.</summary>
    public uint SampleId;
    /// <summary>Absolute position (in the sample's sequence) of the token this row decides.</summary>
    public int Position;
    /// <summary>RNG stream for the sample kernel (<see cref="Random.RngStreams"/>); the verify kernel ignores it.</summary>
    public uint Stream;

    public ulong Seed
    {
        readonly get => ((ulong)SeedHi << 32) | SeedLo;
        set { SeedLo = (uint)value; SeedHi = (uint)(value >> 32); }
    }

    public readonly bool IsGreedy => Temperature == 0f;

    public static SamplingParams Greedy(uint sampleId, int position) =>
        new() { Temperature = 0f, TopK = 0, TopP = 1f, SampleId = sampleId, Position = position };

    public static SamplingParams Random(float temperature, ulong seed, uint sampleId, int position, int topK = 0, float topP = 1f, uint stream = 0)
    {
        var p = new SamplingParams { Temperature = temperature, TopK = topK, TopP = topP, SampleId = sampleId, Position = position, Stream = stream };
        p.Seed = seed;
        return p;
    }

    /// <summary>Throws naming <paramref name="argument"/>[<paramref name="index"/>] if a field is out of range.</summary>
    public readonly void Validate(string argument, int index)
    {
        if (!float.IsFinite(Temperature) || Temperature < 0f)
            throw new ArgumentOutOfRangeException(argument, $"{argument}[{index}].Temperature = {Temperature}: must be finite and >= 0");
        if (!float.IsFinite(TopP) || TopP <= 0f)
            throw new ArgumentOutOfRangeException(argument, $"{argument}[{index}].TopP = {TopP}: must be in (0, 1]");
        if (Position < 0)
            throw new ArgumentOutOfRangeException(argument, $"{argument}[{index}].Position = {Position}: must be >= 0");
    }
}
