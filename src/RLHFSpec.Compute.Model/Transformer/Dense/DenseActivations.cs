using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer.Dense;

/// <summary>
/// The host activations of one forward that the dense executor and the attention stage exchange, pinned (ONNX
/// Runtime and the managed kernels read and write them in place) and grown on demand, never per step.
/// </summary>
internal sealed class DenseActivations
{
    private readonly int _hidden, _qWidth, _kvWidth, _vocab;

    public DenseActivations(DecoderGraphSpec spec)
    {
        _hidden = spec.HiddenSize;
        _qWidth = spec.NumHeads * spec.HeadDim;
        _kvWidth = spec.NumKvHeads * spec.HeadDim;
        _vocab = spec.VocabSize;
    }

    /// <summary>Tokens of the current forward.</summary>
    public int Tokens { get; private set; }

    /// <summary>Rows of the current forward that need logits.</summary>
    public int Rows { get; private set; }

    public float[] X = [];          // [Tokens, H] the residual stream
    public float[] Y = [];          // [Tokens, H] scratch an executor may swap with X
    public float[] Q = [];          // [Tokens, Hq·Hd] after RoPE
    public float[] K = [];          // [Tokens, Hkv·Hd] after RoPE
    public float[] V = [];          // [Tokens, Hkv·Hd]
    public float[] Attended = [];   // [Tokens, Hq·Hd]
    public float[] HeadRows = [];   // [Rows, H] the residual rows that need logits
    public float[] Logits = [];     // [Rows, Vocab]
    public long[] Positions = [];   // [Tokens] as ONNX Runtime takes them
    public int[] Positions32 = [];  // [Tokens] the same, for the managed kernels

    /// <summary>Sizes the buffers for <paramref name="tokens"/> tokens and <paramref name="rows"/> logit rows.</summary>
    public void Prepare(int tokens, int rows)
    {
        Grow(ref X, (long)tokens * _hidden);
        Grow(ref Y, (long)tokens * _hidden);
        Grow(ref Q, (long)tokens * _qWidth);
        Grow(ref Attended, (long)tokens * _qWidth);
        Grow(ref K, (long)tokens * _kvWidth);
        Grow(ref V, (long)tokens * _kvWidth);
        Grow(ref HeadRows, (long)rows * _hidden);
        Grow(ref Logits, (long)rows * _vocab);
        Grow(ref Positions, tokens);
        Grow(ref Positions32, tokens);
        Tokens = tokens;
        Rows = rows;
    }

    /// <summary>Sets token <paramref name="t"/>'s position.</summary>
    public void SetPosition(int t, int position)
    {
        Positions[t] = position;
        Positions32[t] = position;
    }

    /// <summary>Makes the scratch stream the residual stream (an executor that wrote its output into <see cref="Y"/>).</summary>
    public void SwapStreams() => (X, Y) = (Y, X);

    /// <summary>Smallest power of two ≥ <paramref name="needed"/> (at least 64): buffers grow rarely.</summary>
    public static int Capacity(long needed) => (int)Math.Min((ulong)Array.MaxLength, Math.Max(64UL, System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)needed)));

    private static void Grow<T>(ref T[] array, long needed) where T : unmanaged
    {
        if (needed > Array.MaxLength) throw new ArgumentException($"batch: {needed} elements exceed one host array");
        if (array.Length < needed) array = GC.AllocateArray<T>(Capacity(needed), pinned: true);
    }
}
