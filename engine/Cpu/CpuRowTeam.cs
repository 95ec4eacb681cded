using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

/// <summary>
/// Participants of a <see cref="CpuWorkers"/> region that work on one logit row at a time, in lockstep, as a GPU
/// workgroup does: each op splits the row into fixed chunks of <see cref="Chunk"/> values, a participant takes a
/// contiguous run of them, a barrier follows, and every participant then combines all the chunks' partials in chunk
/// order (so all hold the same result and take the same branches). Chunks are fixed and combined in order, so
/// results do not depend on the team's size: a team of one (no pool) computes bit for bit the same.
/// The team owns scratch rows (64-byte aligned) for the warped distributions the kernels keep.
/// </summary>
/// <remarks>Bodies run on a team must not throw: a participant that leaves early leaves the others at a barrier.</remarks>
internal sealed unsafe class CpuRowTeam : IDisposable
{
    /// <summary>Values per chunk: 32 KiB, which stays in L1 between the passes one op makes over it.</summary>
    public const int Chunk = 8192;

    private readonly CpuWorkers? _pool;
    private readonly float[][] _values = new float[2][];   // per chunk partials, alternating between ops
    private readonly float[][] _sums = new float[2][];
    private readonly int[][] _indices = new int[2][];
    private float* _scratch;
    private readonly long _scratchRowLength;

    /// <param name="size">Participants (1: no <paramref name="pool"/> needed).</param>
    /// <param name="rowLength">Longest row the team's ops will see.</param>
    /// <param name="scratchRows">Rows of <paramref name="rowLength"/> floats of scratch.</param>
    public CpuRowTeam(int size, CpuWorkers? pool, int rowLength, int scratchRows)
    {
        if (size > 1 && (pool is null || pool.Count != size)) throw new ArgumentException("a team of several needs a pool of its size", nameof(pool));
        Size = size;
        _pool = size > 1 ? pool : null;
        int chunks = Math.Max(1, (rowLength + Chunk - 1) / Chunk);
        for (int k = 0; k < 2; k++)
        {
            _values[k] = new float[chunks];
            _sums[k] = new float[chunks];
            _indices[k] = new int[chunks];
        }
        _scratchRowLength = (rowLength + 15) & ~15L;
        if (scratchRows > 0) _scratch = (float*)NativeMemory.AlignedAlloc((nuint)(_scratchRowLength * scratchRows * sizeof(float)), 64);
    }

    public int Size { get; }

    /// <summary>Scratch row <paramref name="k"/>, shared by the team.</summary>
    public float* Scratch(int k) => _scratch + k * _scratchRowLength;

    /// <summary>A value the leader (participant 0) computed alone; the others read it after a barrier.</summary>
    public float LeaderValue;

    public Member this[int index] => new(this, index);

    public void Dispose()
    {
        if (_scratch != null) NativeMemory.AlignedFree(_scratch);
        _scratch = null;
    }

    /// <summary>One participant's view of the team: its share of each op, and the results every participant shares.</summary>
    public struct Member
    {
        private readonly CpuRowTeam _team;
        private int _flip;

        internal Member(CpuRowTeam team, int index)
        {
            _team = team;
            Index = index;
            _flip = 0;
        }

        public int Index { get; }
        public readonly CpuRowTeam Team => _team;
        /// <summary>The participant that does a team's serial work and writes its outputs.</summary>
        public readonly bool Leads => Index == 0;

        /// <summary>Waits for every participant (nothing in a team of one).</summary>
        public readonly void Sync() => _team._pool?.Barrier();

        /// <summary>This participant's chunks of a row of <paramref name="n"/> values, the row's chunk count, and the partials to fill.</summary>
        private (int First, int End, int Chunks, float[] Values, int[] Indices) Share(int n) => Share(n, out _);

        private (int First, int End, int Chunks, float[] Values, int[] Indices) Share(int n, out float[] sums)
        {
            int chunks = (n + Chunk - 1) / Chunk;
            var values = _team._values[_flip];
            var indices = _team._indices[_flip];
            sums = _team._sums[_flip];
            _flip ^= 1; // the next op fills the other set: a slower participant may still read this one
            return (Index * chunks / _team.Size, (Index + 1) * chunks / _team.Size, chunks, values, indices);
        }

        private static int Length(int c, int n) => Math.Min(Chunk, n - c * Chunk);

        private static float OrderedSum(float[] values, int chunks)
        {
            float sum = 0f;
            for (int c = 0; c < chunks; c++) sum += values[c];
            return sum;
        }

        /// <summary>
        /// One pass over <paramref name="row"/> (without <paramref name="w"/> each chunk is read once, with its max
        /// running along; with it, once from memory for its max, then again from L1): its max, the first index holding
        /// it, and Σ exp((l − max) · invT), the terms written to <paramref name="w"/> unless it is null. Each chunk sums
        /// relative to its own max and the chunks are rescaled to the row's max when combined, so
        /// a row costs one barrier (two with <paramref name="w"/>: its rescaled terms are then visible to all). Returns
        /// the row's status (<see cref="KernelValidation.RowNotFinite"/> for NaN/+Inf, <see cref="KernelValidation.RowNoFiniteLogit"/>),
        /// with argmax −1 unless it is <see cref="KernelValidation.RowOk"/>.
        /// </summary>
        public int Softmax(float* row, int n, float invT, float* w, out float max, out int argmax, out float sum)
        {
            var (first, end, chunks, values, _) = Share(n, out var sums);
            for (int c = first; c < end; c++)
            {
                long at = (long)c * Chunk;
                int length = Length(c, n);
                if (w == null)
                {
                    sums[c] = CpuRowMath.MaxExpSum(row + at, length, invT, out values[c]);
                    continue;
                }
                float m = CpuRowMath.Max(row + at, length);
                values[c] = m;
                if (float.IsFinite(m)) sums[c] = CpuRowMath.ExpSum(row + at, w + at, length, m, invT);
                else
                {
                    sums[c] = 0f; // all −∞ (weights 0), or a bad row
                    new Span<float>(w + at, length).Clear();
                }
            }
            Sync();
            max = values[0];
            for (int c = 1; c < chunks && !float.IsNaN(max); c++)
                if (float.IsNaN(values[c]) || values[c] > max) max = values[c];
            argmax = -1;
            sum = 0f;
            int status = CpuWarp.RowStatus(max);
            if (status != KernelValidation.RowOk) return status;
            for (int c = 0; c < chunks; c++)
                if (values[c] > float.NegativeInfinity) sum += sums[c] * ChunkScale(values[c], max, invT);
            for (int c = 0; c < chunks; c++)
                if (values[c] == max)
                {
                    argmax = c * Chunk + CpuWarp.FirstIndexOf(new ReadOnlySpan<float>(row + (long)c * Chunk, Length(c, n)), max);
                    break;
                }
            if (w == null) return status;
            for (int c = first; c < end; c++)
                if (values[c] != max && values[c] > float.NegativeInfinity)
                {
                    var chunk = new Span<float>(w + (long)c * Chunk, Length(c, n));
                    TensorPrimitives.Multiply(chunk, ChunkScale(values[c], max, invT), chunk);
                }
            Sync();
            return status;
        }

        /// <summary>exp((chunkMax − max) · invT): from a chunk's own max to the row's.</summary>
        private static float ChunkScale(float chunkMax, float max, float invT) => chunkMax == max ? 1f : MathF.Exp((chunkMax - max) * invT);

        /// <summary>
        /// <see cref="Softmax"/> of a non-greedy row into the weights <paramref name="w"/>, then top-k/top-p (their
        /// thresholds found by the leader alone over the whole row); <paramref name="mass"/> is the kept weights' sum,
        /// <paramref name="fullSum"/> Σ exp((l − max) / T) before top-k/top-p (for log_softmax).
        /// </summary>
        public int Warp(float* row, int n, in SamplingParams p, float* w, out float max, out float mass, out float fullSum)
        {
            int status = Softmax(row, n, 1f / p.Temperature, w, out max, out _, out fullSum);
            mass = fullSum;
            if (status != KernelValidation.RowOk || !CpuWarp.Truncates(p, n)) return status;
            if (Leads) _team.LeaderValue = CpuWarp.Truncate(new ReadOnlySpan<float>(row, n), p, new Span<float>(w, n));
            Sync();
            mass = _team.LeaderValue;
            return status;
        }

        /// <summary>r = max(0, p · pScale − q · qScale); returns Σ r.</summary>
        public float Residual(float* p, float pScale, float* q, float qScale, float* r, int n)
        {
            var (first, end, chunks, values, _) = Share(n);
            for (int c = first; c < end; c++)
            {
                long at = (long)c * Chunk;
                int len = Length(c, n);
                var rc = new Span<float>(r + at, len);
                TensorPrimitives.Multiply(new ReadOnlySpan<float>(p + at, len), pScale, rc);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(q + at, len), -qScale, rc, rc);
                TensorPrimitives.Max(rc, 0f, rc);
                values[c] = TensorPrimitives.Sum(rc);
            }
            Sync();
            return OrderedSum(values, chunks);
        }

        /// <summary>
        /// Drops token <paramref name="x"/> from the weights <paramref name="w"/> (of mass <paramref name="mass"/>) and
        /// returns the mass left; if none is left, keeps <paramref name="w"/> as it was and returns <paramref name="mass"/>.
        /// </summary>
        public float Drop(float* w, int n, int x, float mass)
        {
            Sync(); // every participant has read w[x] before it changes
            var (first, end, chunks, values, _) = Share(n);
            int owner = x / Chunk;
            bool owns = owner >= first && owner < end;
            float old = owns ? w[x] : 0f;
            if (owns) w[x] = 0f;
            for (int c = first; c < end; c++) values[c] = TensorPrimitives.Sum(new ReadOnlySpan<float>(w + (long)c * Chunk, Length(c, n)));
            Sync();
            float left = OrderedSum(values, chunks);
            if (left > 0f) return left;
            if (owns) w[x] = old;
            Sync();
            return mass;
        }

        /// <summary>The exponential race over the positive weights of <paramref name="w"/> (see <see cref="CpuRowMath.Race"/>); −1 if none.</summary>
        public int Race(float* w, int n, in SamplingParams p, int position, uint stream)
        {
            var (first, end, chunks, values, indices) = Share(n);
            for (int c = first; c < end; c++)
            {
                (values[c], indices[c]) = CpuRowMath.Race(w + (long)c * Chunk, Length(c, n), c * Chunk, p, position, stream);
            }
            Sync();
            float bestScore = -1f;
            int winner = -1;
            for (int c = 0; c < chunks; c++)
                if (values[c] > bestScore)
                {
                    bestScore = values[c];
                    winner = indices[c];
                }
            return winner;
        }
    }
}
