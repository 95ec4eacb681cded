using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>
    /// Query rows (tokens × query heads) per work item: the item reads each K and V row of the keys its tokens share
    /// once for all of its rows. A 16-token draft tree of a 16-head model is one item.
    /// </summary>
    private const int AttentionTileRows = 256;

    /// <summary>Score floats per work item (rows × visible keys) above which an item takes fewer tokens.</summary>
    private const int AttentionTileScores = 1 << 20;

    /// <summary>Multiply-adds (query rows × visible keys × head dim) up to which attention runs on the calling thread.</summary>
    private const long AttentionSerialWork = 1 << 16;

    /// <summary>
    /// Work items are (tile of a sample's query tokens, run of KV heads), handed out to the backend's workers one by
    /// one: all KV heads when there are enough tiles to keep the workers busy, so an item streams whole cache rows
    /// (every head of a slot is contiguous). An item scores the keys all of its tokens see (the committed context,
    /// and under a causal mask the new tokens up to its first one) against every query row of the tile, each K row
    /// loaded once; each token's other visible new tokens (its tree ancestors, or the causal diagonal) are scored per
    /// token. Softmax runs per row in fp32 (max-subtracted) over the row's visible keys in logical order; the output
    /// accumulates the V rows in the same order.
    /// </summary>
    /// <remarks>
    /// <b>Batch invariance.</b> Every score is the same chain of 8-wide FMAs over the head dimension followed by a
    /// fixed reduction tree (<see cref="Reduce8"/>), then the scalar tail and the scale; every output element is one
    /// FMA chain over the row's visible keys in logical order. Neither depends on how the keys were chunked, how many
    /// rows or tokens an item holds or what else is in the batch, so a token attends bit for bit alike in a decode
    /// step, a prefill and a tree verification — as greedy speculative decoding needs. (For that reason a long
    /// context is not split over workers, flash-decoding style: merging partial softmax states rounds differently.)
    /// </remarks>
    protected override void AttentionCore(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        var q = Host(query, nameof(query));
        var k = Host(keyCache, nameof(keyCache));
        var v = Host(valueCache, nameof(valueCache));
        var o = Host(output, nameof(output));

        int samples = batch.NumSamples, numHeads = batch.NumHeads, kvHeads = layout.NumKvHeads;
        int maxVisible = 0;
        long work = 0;
        for (int s = 0; s < samples; s++)
        {
            int n = batch.QueryOffsets[s + 1] - batch.QueryOffsets[s];
            maxVisible = Math.Max(maxVisible, batch.ContextLens[s] + n);
            work += (long)n * (batch.ContextLens[s] + n);
        }
        work *= (long)numHeads * layout.HeadDim;
        int tileTokens = (int)Math.Clamp(Math.Min(AttentionTileRows / numHeads, AttentionTileScores / ((long)numHeads * Math.Max(1, maxVisible))), 1, 256);
        int tiles = 0;
        for (int s = 0; s < samples; s++) tiles += (batch.QueryOffsets[s + 1] - batch.QueryOffsets[s] + tileTokens - 1) / tileTokens;
        if (tiles == 0) return;
        bool serial = work <= AttentionSerialWork || Threads == 1;
        // Too few tiles for the workers: split the KV heads into runs.
        int runs = serial ? 1 : Math.Clamp((2 * Threads + tiles - 1) / tiles, 1, kvHeads);
        int headsPerRun = (kvHeads + runs - 1) / runs;
        runs = (kvHeads + headsPerRun - 1) / headsPerRun;

        // Spans cannot enter the workers: copy the metadata into pooled arrays.
        int[] tileSample = ArrayPool<int>.Shared.Rent(tiles);
        int[] tileStart = ArrayPool<int>.Shared.Rent(tiles);
        int[] offsets = ArrayPool<int>.Shared.Rent(samples + 1);
        int[] contexts = ArrayPool<int>.Shared.Rent(samples);
        int[] tables = ArrayPool<int>.Shared.Rent(Math.Max(batch.BlockTables.Length, 1));
        uint[] mask = ArrayPool<uint>.Shared.Rent(Math.Max(batch.TreeMask.Length, 1));
        try
        {
            batch.QueryOffsets.CopyTo(offsets);
            batch.ContextLens.CopyTo(contexts);
            batch.BlockTables.CopyTo(tables);
            batch.TreeMask.CopyTo(mask);
            int t = 0;
            for (int s = 0; s < samples; s++)
                for (int i = 0; i < offsets[s + 1] - offsets[s]; i += tileTokens)
                {
                    tileSample[t] = s;
                    tileStart[t++] = i;
                }

            var job = new AttentionJob(q, k, v, o, layout, tileSample, tileStart, tiles, tileTokens, runs, headsPerRun, offsets, contexts,
                tables, mask, batch.TreeMask.IsEmpty, batch.MaskWords, batch.MaxBlocksPerSample, numHeads, batch.Scale, maxVisible);
            // Small steps (decode of a few samples): waking the workers costs more than the work.
            if (serial) job.Execute(0, 1);
            else Workers.Run(job);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(tileSample);
            ArrayPool<int>.Shared.Return(tileStart);
            ArrayPool<int>.Shared.Return(offsets);
            ArrayPool<int>.Shared.Return(contexts);
            ArrayPool<int>.Shared.Return(tables);
            ArrayPool<uint>.Shared.Return(mask);
        }
    }

    private sealed unsafe class AttentionJob(
        CpuBuffer<float> query, CpuBuffer<uint> keyCache, CpuBuffer<uint> valueCache, CpuBuffer<float> output, KvLayout layout,
        int[] tileSample, int[] tileStart, int tiles, int tileTokens, int runs, int headsPerRun, int[] offsets, int[] contexts,
        int[] tables, uint[] mask, bool causal, int maskWords, int maxBlocks, int numHeads, float scale, int maxVisible) : IParallelWork
    {
        private const int Chunk = 8;   // keys scored, or accumulated, together

        private readonly int _group = numHeads / layout.NumKvHeads;
        private readonly int _stride = (maxVisible + Chunk - 1) / Chunk * Chunk;   // floats per score row
        private readonly int _rowWords = layout.RowWords;
        private readonly bool _f32 = layout.DType == KvDType.F32;
        // fp16 rows are loaded without the 2^112 of their rebias where the query rows and probabilities can carry it.
        private readonly bool _scaledHalves = layout.DType != KvDType.F32 && Avx2.IsSupported;
        private readonly float* _query = query.Pointer, _output = output.Pointer;
        private readonly uint* _keys = keyCache.Pointer, _values = valueCache.Pointer;
        private long _next = -1;

        /// <summary>One participant's buffers, rented for the region.</summary>
        private sealed class Scratch
        {
            public required float[] Scores;   // [rows, stride] scores, then probabilities; row = (token, head of the run)
            public required float[] Query;    // [rows, headDim] the tile's query rows times 2^112, for ScaledHalfRow scores
            public required float[] Sums;     // [rows] softmax denominators
            public required float[] Rows;     // [Chunk + 1, RowElements] fp16 rows (a run's heads) converted to fp32, then a zero row
            public required int[] Extra;      // logical slots one token sees beyond the shared keys
            public required int[] Slots;      // [context + n] physical slot of each logical slot of the item's sample
        }

        public void Execute(int index, int count)
        {
            int d = layout.HeadDim, rows = tileTokens * headsPerRun * _group;
            var scratch = new Scratch
            {
                Scores = ArrayPool<float>.Shared.Rent(rows * _stride),
                Query = ArrayPool<float>.Shared.Rent(_scaledHalves ? rows * d : 1),
                Sums = ArrayPool<float>.Shared.Rent(rows),
                Rows = ArrayPool<float>.Shared.Rent((Chunk + 1) * layout.RowElements),
                Extra = ArrayPool<int>.Shared.Rent(Math.Max(1, maxVisible)),
                Slots = ArrayPool<int>.Shared.Rent(Math.Max(1, maxVisible)),
            };
            try
            {
                scratch.Rows.AsSpan(Chunk * layout.RowElements, layout.RowElements).Clear();
                long items = (long)tiles * runs, item;
                while ((item = Interlocked.Increment(ref _next)) < items) Run((int)(item / runs), (int)(item % runs), scratch);
            }
            finally
            {
                ArrayPool<float>.Shared.Return(scratch.Scores);
                ArrayPool<float>.Shared.Return(scratch.Query);
                ArrayPool<float>.Shared.Return(scratch.Sums);
                ArrayPool<float>.Shared.Return(scratch.Rows);
                ArrayPool<int>.Shared.Return(scratch.Extra);
                ArrayPool<int>.Shared.Return(scratch.Slots);
            }
        }

        private void Run(int tile, int run, Scratch scratch)
        {
            int s = tileSample[tile], i0 = tileStart[tile], first = offsets[s], n = offsets[s + 1] - first;
            int i1 = Math.Min(n, i0 + tileTokens), context = contexts[s], g = _group, d = layout.HeadDim;
            int kv0 = run * headsPerRun, kvn = Math.Min(layout.NumKvHeads, kv0 + headsPerRun) - kv0;
            int perToken = kvn * g;
            // Keys every token of the tile sees: the context, and under a causal mask the new tokens up to i0.
            int shared = causal ? context + i0 + 1 : context;
            int[] slots = scratch.Slots;
            // Physical slots of the sample's logical slots, block by block (no division per key).
            for (int logical = 0, b = s * maxBlocks; logical < context + n; b++)
            {
                int physical = tables[b] * layout.BlockSize;
                for (int j = 0; j < layout.BlockSize && logical < context + n; j++) slots[logical++] = physical + j;
            }

            fixed (float* scores = scratch.Scores, sums = scratch.Sums, converted = scratch.Rows, scaledQuery = scratch.Query)
            {
                float** rows = stackalloc float*[Chunk];
                int* chunk = stackalloc int[Chunk];
                float* zero = converted + Chunk * layout.RowElements;
                long tokenStride = (long)numHeads * d;
                int tokens = i1 - i0;
                // Query and output row r = (token ti, KV head kv0 + h / g, query head h % g of its group) at token ti, head kv0·g + h.
                float* q = _query + (first + i0) * tokenStride + kv0 * g * d;
                float* o = _output + (first + i0) * tokenStride + kv0 * g * d;
                // Scores against fp16 rows take the query rows times 2^112 ([tokens, perToken, d]) where that is exact.
                bool scaled = _scaledHalves && ScaleQuery(q, tokenStride, tokens, perToken * d, scaledQuery);

                // Scores: every key a row sees, the shared ones first, then softmax over each row's visible keys.
                Sweep(values: false, scaled, scaled ? scaledQuery : q, scaled ? perToken * d : tokenStride, tokens, perToken, i0, first, n, context, shared, kv0, kvn, slots, scratch.Extra, chunk, rows, converted, zero, scores);
                int* visible = stackalloc int[tokens];
                for (int ti = 0; ti < tokens; ti++)
                {
                    visible[ti] = shared + ExtraKeys(ti + i0, first, n, context, shared, scratch.Extra);
                    for (int h = 0; h < perToken; h++)
                        sums[ti * perToken + h] = Softmax(scores + (long)(ti * perToken + h) * _stride, visible[ti]);
                }
                scaled = _scaledHalves && ScaleProbabilities(scores, sums, tokens, perToken, visible);

                // Σ p·v over the same keys in the same order, then the softmax denominators.
                for (int ti = 0; ti < tokens; ti++) new Span<float>(o + ti * tokenStride, perToken * d).Clear();
                Sweep(values: true, scaled, o, tokenStride, tokens, perToken, i0, first, n, context, shared, kv0, kvn, slots, scratch.Extra, chunk, rows, converted, zero, scores);
                for (int ti = 0; ti < tokens; ti++)
                    for (int h = 0; h < perToken; h++)
                    {
                        var acc = new Span<float>(o + ti * tokenStride + h * d, d);
                        TensorPrimitives.Multiply(acc, 1f / sums[ti * perToken + h], acc);
                    }
            }
        }

        /// <summary>
        /// One pass over an item's keys in logical order, 8 at a time: the <paramref name="shared"/> ones for every token of the
        /// tile, then each token's own further keys. For keys (<paramref name="values"/> false) it scores the query rows at
        /// <paramref name="rowBase"/> into the score rows; for values it accumulates p·v into the output rows at <paramref name="rowBase"/>.
        /// <paramref name="scaled"/>: the query rows or the probabilities carry a factor 2^112 that fp16 rows are then loaded without.
        /// </summary>
        private void Sweep(bool values, bool scaled, float* rowBase, long tokenStride, int tokens, int perToken, int i0, int first, int n, int context, int shared,
            int kv0, int kvn, int[] slots, int[] extra, int* chunk, float** rows, float* converted, float* zero, float* scores)
        {
            uint* cache = values ? _values : _keys;
            for (int k0 = 0; k0 < shared; k0 += Chunk)
            {
                int count = Math.Min(Chunk, shared - k0);
                for (int j = 0; j < count; j++) chunk[j] = slots[k0 + j];
                Prefetch(cache, slots, k0 + Chunk, Math.Min(k0 + 2 * Chunk, shared), kv0, kvn);
                bool halves = Gather(cache, chunk, count, kv0, kvn, HalvesInPlace(tokens), scaled, converted, zero, rows);
                Apply(values, halves, scaled, rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores + k0);
            }
            for (int ti = 0; ti < tokens; ti++)
            {
                int own = ExtraKeys(ti + i0, first, n, context, shared, extra);
                for (int e0 = 0; e0 < own; e0 += Chunk)
                {
                    int count = Math.Min(Chunk, own - e0);
                    for (int j = 0; j < count; j++) chunk[j] = slots[extra[e0 + j]];
                    bool halves = Gather(cache, chunk, count, kv0, kvn, HalvesInPlace(1), scaled, converted, zero, rows);
                    Apply(values, halves, scaled, rowBase + ti * tokenStride, tokenStride, 1, perToken, rows, count, kvn, scores + (long)(ti * perToken) * _stride + shared + e0);
                }
            }
        }

        /// <summary>
        /// Asks for the run's part of the rows of logical slots [<paramref name="from"/>, <paramref name="to"/>) (the next
        /// chunk) ahead of use. Slots of a block are contiguous, but blocks lie anywhere and the hardware prefetchers stop
        /// at each 4 KiB page, so without this a decode step of many samples waits on memory at every page.
        /// </summary>
        private void Prefetch(uint* cache, int[] slots, int from, int to, int kv0, int kvn)
        {
            if (!Sse.IsSupported) return;
            int elementBytes = _f32 ? 4 : 2, bytes = kvn * layout.HeadDim * elementBytes;
            for (int logical = from; logical < to; logical++)
            {
                byte* row = (byte*)(cache + (long)slots[logical] * _rowWords) + (long)kv0 * layout.HeadDim * elementBytes;
                for (int b = 0; b < bytes; b += 64) Sse.Prefetch0(row + b);
            }
        }

        /// <summary>
        /// Whether fp16 rows are read in place, each 8 halves converted in registers where the FMAs use them, rather than
        /// converted once into fp32 rows: when at most two query rows (one token, a group of one or two heads, as a
        /// decode step of the medium model) use each K/V row, in-place reading converts each half once as well and
        /// saves the store and reload of the fp32 copy; with more rows the copy's conversion is shared by all of them.
        /// <see cref="Gather"/> still converts a chunk that holds an Inf or NaN, which the in-place loads leave out.
        /// </summary>
        private bool HalvesInPlace(int tokens) => !_f32 && tokens == 1 && _group <= 2 && Avx2.IsSupported;

        /// <summary>
        /// Scores or accumulates one gathered chunk; fp16 rows read in place are loaded without their 2^112 (<see
        /// cref="ScaledHalfRow"/>) when the query rows or probabilities carry it (<paramref name="scaled"/>).
        /// </summary>
        private void Apply(bool values, bool halves, bool scaled, float* rowBase, long tokenStride, int tokens, int perToken, float** rows, int count, int kvn, float* scores)
        {
            if (values)
            {
                if (halves && scaled) AccumulateChunk<ScaledHalfRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
                else if (halves) AccumulateChunk<FiniteHalfRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
                else AccumulateChunk<SingleRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
            }
            else if (halves && scaled) ScoreChunk<ScaledHalfRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
            else if (halves) ScoreChunk<FiniteHalfRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
            else ScoreChunk<SingleRow>(rowBase, tokenStride, tokens, perToken, rows, count, kvn, scores);
        }

        /// <summary>
        /// 2^112 × the tile's <paramref name="tokens"/> query rows of <paramref name="width"/> floats (at <paramref name="q"/>,
        /// <paramref name="tokenStride"/> apart) into <paramref name="destination"/>, packed. False, leaving the scores to the
        /// unscaled path, when some element is NaN or not under 2^16 in magnitude (its copy would overflow, or is ±Inf
        /// already); otherwise scaling by a power of two is exact, subnormals included.
        /// </summary>
        private static bool ScaleQuery(float* q, long tokenStride, int tokens, int width, float* destination)
        {
            for (int ti = 0; ti < tokens; ti++)
            {
                var row = new ReadOnlySpan<float>(q + ti * tokenStride, width);
                if (!(MathF.Abs(TensorPrimitives.MaxMagnitude(row)) < MaxScaled)) return false;
                TensorPrimitives.Multiply(row, HalfRebias, new Span<float>(destination + (long)ti * width, width));
            }
            return true;
        }

        /// <summary>
        /// 2^112 × the item's probability rows (<paramref name="perToken"/> per token, over the token's <paramref
        /// name="visible"/> keys), in place, when every row's sum is under 2^16 (false, unchanged, otherwise). Each
        /// probability is e^(x − max) ≥ 0 and at most its row's sum (fp adds of non-negative terms never fall below a
        /// term; a NaN makes the sum NaN), so none overflows: every product is exact.
        /// </summary>
        private bool ScaleProbabilities(float* scores, float* sums, int tokens, int perToken, int* visible)
        {
            for (int r = 0; r < tokens * perToken; r++)
                if (!(sums[r] < MaxScaled)) return false;
            for (int r = 0; r < tokens * perToken; r++)
            {
                var row = new Span<float>(scores + (long)r * _stride, visible[r / perToken]);
                TensorPrimitives.Multiply(row, HalfRebias, row);
            }
            return true;
        }

        /// <summary>Magnitude below which a float times 2^112 stays finite (2^128 is over the largest float).</summary>
        private const float MaxScaled = 65536f;

        /// <summary>
        /// The run's part (KV heads kv0 … kv0 + kvn − 1, contiguous in a slot) of <paramref name="count"/> cache rows: in
        /// place for fp32 and for fp16 read as <paramref name="halves"/> (the pointer then addresses halves), else converted
        /// into <paramref name="converted"/>; the rest of the eight point at zeros (zero bits: 0 as a float and as a half).
        /// Returns whether the rows are halves read in place: only when asked and every half of them is finite, as
        /// <see cref="FiniteHalfRow"/> needs; a chunk holding an Inf or NaN is converted, exactly, like any other
        /// (<paramref name="scaled"/>: to 2^−112 × its values, Inf and NaN as they are, for factors that carry the 2^112).
        /// </summary>
        private bool Gather(uint* cache, int* chunkSlots, int count, int kv0, int kvn, bool halves, bool scaled, float* converted, float* zero, float** rows)
        {
            int d = layout.HeadDim, width = kvn * d;
            for (int j = 0; j < count && halves; j++) halves = AllFinite((short*)(cache + (long)chunkSlots[j] * _rowWords) + (long)kv0 * d, width);
            for (int j = 0; j < Chunk; j++)
            {
                if (j >= count) rows[j] = zero;
                else if (_f32) rows[j] = (float*)cache + (long)chunkSlots[j] * _rowWords + (long)kv0 * d;
                // Little-endian: the low half of a word is the even element, as the layout says.
                else if (halves) rows[j] = (float*)((short*)(cache + (long)chunkSlots[j] * _rowWords) + (long)kv0 * d);
                else
                {
                    short* from = (short*)(cache + (long)chunkSlots[j] * _rowWords) + (long)kv0 * d;
                    if (scaled) HalfToScaledSingle(from, converted + j * width, width);
                    else HalfToSingle(from, converted + j * width, width);
                    rows[j] = converted + j * width;
                }
            }
            return halves;
        }

        /// <summary>Scores of <paramref name="tokens"/> tokens' rows against eight gathered keys, written from column <paramref name="scores"/> of row 0.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private void ScoreChunk<TRow>(float* q, long tokenStride, int tokens, int perToken, float** rows, int count, int kvn, float* scores)
            where TRow : struct, IKvRow
        {
            int d = layout.HeadDim, g = _group;
            float** keys = stackalloc float*[Chunk];
            for (int kv = 0; kv < kvn; kv++)
            {
                for (int j = 0; j < Chunk; j++) keys[j] = TRow.Offset(rows[j], kv * d);
                for (int ti = 0; ti < tokens; ti++)
                    ScoreGroup<TRow>(q + ti * tokenStride, kv * g, keys, scores + (long)(ti * perToken) * _stride, count);
            }
        }

        /// <summary>Σ p·v of eight gathered value rows into <paramref name="tokens"/> tokens' output rows (probabilities from column <paramref name="probabilities"/> of row 0).</summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private void AccumulateChunk<TRow>(float* o, long tokenStride, int tokens, int perToken, float** rows, int count, int kvn, float* probabilities)
            where TRow : struct, IKvRow
        {
            int d = layout.HeadDim, g = _group;
            float** values = stackalloc float*[Chunk];
            for (int kv = 0; kv < kvn; kv++)
            {
                for (int j = 0; j < Chunk; j++) values[j] = TRow.Offset(rows[j], kv * d);
                for (int ti = 0; ti < tokens; ti++)
                    AccumulateGroup<TRow>(o + ti * tokenStride, kv * g, probabilities + (long)(ti * perToken) * _stride, values, count);
            }
        }

        /// <summary>
        /// exp(x − max x) in place over <paramref name="length"/> scores; returns their sum. Every element goes through the
        /// same 8-wide exp (the last partial vector padded with −∞, whose exp is 0), and the sum is 8 lane chains then
        /// <see cref="Reduce8"/>'s tree: the result depends on the row alone.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static float Softmax(float* x, int length)
        {
            int full = length & ~7, i;
            var max = Vector256.Create(float.NegativeInfinity);
            for (i = 0; i < full; i += 8) max = Vector256.Max(max, Vector256.Load(x + i));
            float m = float.NegativeInfinity;
            for (int j = 0; j < 8; j++) m = Math.Max(m, max[j]);
            for (; i < length; i++) m = Math.Max(m, x[i]);
            var shift = Vector256.Create(m);
            var sum = Vector256<float>.Zero;
            for (i = 0; i < full; i += 8)
            {
                var e = CpuRowMath.Exp(Vector256.Load(x + i) - shift);
                e.Store(x + i);
                sum += e;
            }
            if (i < length)
            {
                float* tail = stackalloc float[8];
                for (int j = 0; j < 8; j++) tail[j] = i + j < length ? x[i + j] : float.NegativeInfinity;
                var e = CpuRowMath.Exp(Vector256.Load(tail) - shift);
                e.Store(tail);
                for (int j = 0; i + j < length; j++) x[i + j] = tail[j];
                sum += e;
            }
            var zero = Vector256<float>.Zero;
            return Reduce8(sum, zero, zero, zero, zero, zero, zero, zero)[0];
        }

        /// <summary>
        /// Scores of the group's query heads [<paramref name="h0"/>, h0 + group) of one token (<paramref name="q"/>: the token's
        /// first head of the item) against eight keys, into score rows h (<paramref name="scores"/>: row 0's first column):
        /// two heads at a time, sharing the key loads.
        /// </summary>
        private void ScoreGroup<TRow>(float* q, int h0, float** keys, float* scores, int count) where TRow : struct, IKvRow
        {
            int d = layout.HeadDim, h = h0, end = h0 + _group;
            for (; h + 2 <= end; h += 2)
                Score2<TRow>(q + h * d, q + (h + 1) * d, keys, d, scores + (long)h * _stride, scores + (long)(h + 1) * _stride, count);
            if (h < end) Score<TRow>(q + h * d, keys, d, scores + (long)h * _stride, count);
        }

        /// <summary><see cref="Accumulate"/> for the group's heads [<paramref name="h0"/>, h0 + group) of one token, two at a time.</summary>
        private void AccumulateGroup<TRow>(float* o, int h0, float* scores, float** values, int count) where TRow : struct, IKvRow
        {
            int d = layout.HeadDim, h = h0, end = h0 + _group;
            for (; h + 2 <= end; h += 2)
                Accumulate2<TRow>(o + h * d, o + (h + 1) * d, scores + (long)h * _stride, scores + (long)(h + 1) * _stride, values, count, d);
            if (h < end) Accumulate<TRow>(o + h * d, scores + (long)h * _stride, values, count, d);
        }

        /// <summary>Logical slots, in order, that token <paramref name="i"/> sees beyond the <paramref name="shared"/> ones; returns their count.</summary>
        private int ExtraKeys(int i, int first, int n, int context, int shared, int[] extra)
        {
            int count = 0;
            if (causal)
            {
                for (int logical = shared; logical <= context + i; logical++) extra[count++] = logical;
                return count;
            }
            int t = first + i;
            for (int j = 0; j < n; j++)
                if ((mask[t * maskWords + j / 32] >> (j % 32) & 1) != 0) extra[count++] = context + j;
            return count;
        }

        /// <summary>
        /// scale · q·k for the first <paramref name="count"/> of eight key rows into <paramref name="destination"/>: per key
        /// an 8-wide FMA chain over the head dimension, <see cref="Reduce8"/>, the scalar tail, then the scale.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Score<TRow>(float* q, float** k, int d, float* destination, int count) where TRow : struct, IKvRow
        {
            int d8 = d & ~7;
            Vector256<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
            float* k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7];
            for (int c = 0; c < d8; c += 8)
            {
                var x = Vector256.Load(q + c);
                p0 = Vector256.FusedMultiplyAdd(x, TRow.Load(k0, c), p0);
                p1 = Vector256.FusedMultiplyAdd(x, TRow.Load(k1, c), p1);
                p2 = Vector256.FusedMultiplyAdd(x, TRow.Load(k2, c), p2);
                p3 = Vector256.FusedMultiplyAdd(x, TRow.Load(k3, c), p3);
                p4 = Vector256.FusedMultiplyAdd(x, TRow.Load(k4, c), p4);
                p5 = Vector256.FusedMultiplyAdd(x, TRow.Load(k5, c), p5);
                p6 = Vector256.FusedMultiplyAdd(x, TRow.Load(k6, c), p6);
                p7 = Vector256.FusedMultiplyAdd(x, TRow.Load(k7, c), p7);
            }
            var sum = Reduce8(p0, p1, p2, p3, p4, p5, p6, p7);
            if (d8 == d && count == Chunk)
            {
                (sum * Vector256.Create(scale)).Store(destination);
                return;
            }
            Finish<TRow>(sum, q, k, d8, d, destination, count);
        }

        /// <summary>acc += Σ_j p[j]·v[j] over <paramref name="count"/> value rows (from column <paramref name="offset"/>), key by key (one FMA chain per element).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Accumulate<TRow>(float* acc, float* p, float** v, int count, int d, int offset = 0) where TRow : struct, IKvRow
        {
            int c = 0;
            for (; c + 32 <= d; c += 32)
            {
                var a0 = Vector256.Load(acc + c); var a1 = Vector256.Load(acc + c + 8);
                var a2 = Vector256.Load(acc + c + 16); var a3 = Vector256.Load(acc + c + 24);
                for (int j = 0; j < count; j++)
                {
                    var w = Vector256.Create(p[j]);
                    float* row = v[j];
                    a0 = Vector256.FusedMultiplyAdd(TRow.Load(row, offset + c), w, a0);
                    a1 = Vector256.FusedMultiplyAdd(TRow.Load(row, offset + c + 8), w, a1);
                    a2 = Vector256.FusedMultiplyAdd(TRow.Load(row, offset + c + 16), w, a2);
                    a3 = Vector256.FusedMultiplyAdd(TRow.Load(row, offset + c + 24), w, a3);
                }
                a0.Store(acc + c); a1.Store(acc + c + 8); a2.Store(acc + c + 16); a3.Store(acc + c + 24);
            }
            for (; c + 8 <= d; c += 8)
            {
                var a = Vector256.Load(acc + c);
                for (int j = 0; j < count; j++) a = Vector256.FusedMultiplyAdd(TRow.Load(v[j], offset + c), Vector256.Create(p[j]), a);
                a.Store(acc + c);
            }
            for (; c < d; c++)
            {
                float a = acc[c];
                for (int j = 0; j < count; j++) a = MathF.FusedMultiplyAdd(TRow.LoadOne(v[j], offset + c), p[j], a);
                acc[c] = a;
            }
        }

        /// <summary><see cref="Score"/> for two query rows at once, every lane's arithmetic as in <see cref="Score"/>.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private void Score2<TRow>(float* qa, float* qb, float** k, int d, float* da, float* db, int count) where TRow : struct, IKvRow
        {
            int d8 = d & ~7;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default, b4 = default, b5 = default, b6 = default, b7 = default;
            float* k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7];
            for (int c = 0; c < d8; c += 8)
            {
                var x = Vector256.Load(qa + c);
                var y = Vector256.Load(qb + c);
                var r = TRow.Load(k0, c); a0 = Vector256.FusedMultiplyAdd(x, r, a0); b0 = Vector256.FusedMultiplyAdd(y, r, b0);
                r = TRow.Load(k1, c); a1 = Vector256.FusedMultiplyAdd(x, r, a1); b1 = Vector256.FusedMultiplyAdd(y, r, b1);
                r = TRow.Load(k2, c); a2 = Vector256.FusedMultiplyAdd(x, r, a2); b2 = Vector256.FusedMultiplyAdd(y, r, b2);
                r = TRow.Load(k3, c); a3 = Vector256.FusedMultiplyAdd(x, r, a3); b3 = Vector256.FusedMultiplyAdd(y, r, b3);
                r = TRow.Load(k4, c); a4 = Vector256.FusedMultiplyAdd(x, r, a4); b4 = Vector256.FusedMultiplyAdd(y, r, b4);
                r = TRow.Load(k5, c); a5 = Vector256.FusedMultiplyAdd(x, r, a5); b5 = Vector256.FusedMultiplyAdd(y, r, b5);
                r = TRow.Load(k6, c); a6 = Vector256.FusedMultiplyAdd(x, r, a6); b6 = Vector256.FusedMultiplyAdd(y, r, b6);
                r = TRow.Load(k7, c); a7 = Vector256.FusedMultiplyAdd(x, r, a7); b7 = Vector256.FusedMultiplyAdd(y, r, b7);
            }
            var sa = Reduce8(a0, a1, a2, a3, a4, a5, a6, a7);
            var sb = Reduce8(b0, b1, b2, b3, b4, b5, b6, b7);
            if (d8 == d && count == Chunk)
            {
                var sc = Vector256.Create(scale);
                (sa * sc).Store(da);
                (sb * sc).Store(db);
                return;
            }
            Finish<TRow>(sa, qa, k, d8, d, da, count);
            Finish<TRow>(sb, qb, k, d8, d, db, count);
        }

        /// <summary>The scalar tail of the head dimension, the scale and the store of <paramref name="count"/> scores.</summary>
        private void Finish<TRow>(Vector256<float> sum, float* q, float** k, int d8, int d, float* destination, int count) where TRow : struct, IKvRow
        {
            float* lanes = stackalloc float[Chunk];
            sum.Store(lanes);
            for (int j = 0; j < count; j++)
            {
                float value = lanes[j];
                for (int c = d8; c < d; c++) value = MathF.FusedMultiplyAdd(q[c], TRow.LoadOne(k[j], c), value);
                destination[j] = scale * value;
            }
        }

        /// <summary><see cref="Accumulate"/> for two rows at once, sharing the value loads; every element's chain as there.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        private static void Accumulate2<TRow>(float* accA, float* accB, float* pa, float* pb, float** v, int count, int d) where TRow : struct, IKvRow
        {
            int c = 0;
            for (; c + 32 <= d; c += 32)
            {
                var a0 = Vector256.Load(accA + c); var a1 = Vector256.Load(accA + c + 8);
                var a2 = Vector256.Load(accA + c + 16); var a3 = Vector256.Load(accA + c + 24);
                var b0 = Vector256.Load(accB + c); var b1 = Vector256.Load(accB + c + 8);
                var b2 = Vector256.Load(accB + c + 16); var b3 = Vector256.Load(accB + c + 24);
                for (int j = 0; j < count; j++)
                {
                    var wa = Vector256.Create(pa[j]);
                    var wb = Vector256.Create(pb[j]);
                    float* row = v[j];
                    var r = TRow.Load(row, c); a0 = Vector256.FusedMultiplyAdd(r, wa, a0); b0 = Vector256.FusedMultiplyAdd(r, wb, b0);
                    r = TRow.Load(row, c + 8); a1 = Vector256.FusedMultiplyAdd(r, wa, a1); b1 = Vector256.FusedMultiplyAdd(r, wb, b1);
                    r = TRow.Load(row, c + 16); a2 = Vector256.FusedMultiplyAdd(r, wa, a2); b2 = Vector256.FusedMultiplyAdd(r, wb, b2);
                    r = TRow.Load(row, c + 24); a3 = Vector256.FusedMultiplyAdd(r, wa, a3); b3 = Vector256.FusedMultiplyAdd(r, wb, b3);
                }
                a0.Store(accA + c); a1.Store(accA + c + 8); a2.Store(accA + c + 16); a3.Store(accA + c + 24);
                b0.Store(accB + c); b1.Store(accB + c + 8); b2.Store(accB + c + 16); b3.Store(accB + c + 24);
            }
            if (c < d)
            {
                // The remainder (head dims not a multiple of 32) row by row, with Accumulate's own 8-wide and scalar steps.
                Accumulate<TRow>(accA + c, pa, v, count, d - c, c);
                Accumulate<TRow>(accB + c, pb, v, count, d - c, c);
            }
        }
    }

    /// <summary>
    /// Lane j of the result is the sum of the eight lanes of p_j as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)),
    /// whatever the other vectors hold: three rounds of horizontal adds where AVX has them, the same sums otherwise.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Reduce8(Vector256<float> p0, Vector256<float> p1, Vector256<float> p2, Vector256<float> p3,
        Vector256<float> p4, Vector256<float> p5, Vector256<float> p6, Vector256<float> p7)
    {
        if (Avx.IsSupported)
        {
            var a = Avx.HorizontalAdd(Avx.HorizontalAdd(p0, p1), Avx.HorizontalAdd(p2, p3));
            var b = Avx.HorizontalAdd(Avx.HorizontalAdd(p4, p5), Avx.HorizontalAdd(p6, p7));
            return Avx.Permute2x128(a, b, 0x20) + Avx.Permute2x128(a, b, 0x31);
        }
        return Vector256.Create(Sum(p0), Sum(p1), Sum(p2), Sum(p3), Sum(p4), Sum(p5), Sum(p6), Sum(p7));

        static float Sum(Vector256<float> p) => ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
    }

    /// <summary>
    /// fp16 → fp32 for KV rows: <see cref="HalfToSingle8"/> where AVX2 is present, <c>(float)Half</c> for the rest.
    /// TensorPrimitives.ConvertToSingle costs about as much as the attention arithmetic itself at these row lengths.
    /// </summary>
    internal static unsafe void HalfToSingle(ReadOnlySpan<Half> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("the destination is shorter than the source", nameof(destination));
        fixed (Half* from = source)
        fixed (float* to = destination)
            HalfToSingle((short*)from, to, source.Length);
    }

    private static unsafe void HalfToSingle(short* from, float* to, int length)
    {
        int i = 0;
        if (Avx2.IsSupported)
            for (; i + 8 <= length; i += 8) HalfToSingle8(from + i).Store(to + i);
        for (; i < length; i++) to[i] = (float)BitConverter.Int16BitsToHalf(from[i]);
    }

    /// <summary>
    /// <see cref="HalfToSingle"/> short of the 2^112 rebias: finite halves → 2^−112 × their values, exactly (subnormals
    /// arriving as fp32 subnormals); ±Inf and NaN (payloads included) → the same floats as <see cref="HalfToSingle"/>.
    /// Needs AVX2 for more than the scalar form.
    /// </summary>
    internal static unsafe void HalfToScaledSingle(short* from, float* to, int length)
    {
        int i = 0;
        if (Avx2.IsSupported)
            for (; i + 8 <= length; i += 8)
            {
                var x = Avx2.ConvertToVector256Int32(from + i) << 13;
                var infOrNaN = Vector256.Equals(x & Vector256.Create(0x0F800000), Vector256.Create(0x0F800000));
                ((x & Vector256.Create(unchecked((int)0x8FFFE000))) | (infOrNaN & Vector256.Create(0x7F800000))).AsSingle().Store(to + i);
            }
        for (; i < length; i++)
        {
            int x = from[i] << 13, bits = x & unchecked((int)0x8FFFE000);
            to[i] = BitConverter.Int32BitsToSingle((x & 0x0F800000) == 0x0F800000 ? bits | 0x7F800000 : bits);
        }
    }

    /// <summary>
    /// Eight fp16 bit patterns → fp32, exactly (subnormals, ±0, ±Inf and NaN payloads included), in eight vector ops:
    /// sign-extended and shifted left by 13, a half's exponent and mantissa sit where a float's do (bits 27…13) and its
    /// sign in bit 31 (bits 30…28, copies of it, are masked off); that float times 2^112 rebiases the exponent (15 →
    /// 127) exactly, a subnormal half arriving as a subnormal float. Only an all-ones half exponent (Inf, NaN) needs the
    /// float's all-ones exponent ORed back in. Callers check <see cref="Avx2.IsSupported"/>.
    /// </summary>
    /// <remarks>
    /// .NET 10 has no F16C intrinsic (<c>vcvtph2ps</c>) short of AVX-512/AVX10, which Zen 3 lacks; this form costs
    /// about as many vector ops as the FMAs its lanes feed in a decode step.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector256<float> HalfToSingle8(short* source)
    {
        var x = Avx2.ConvertToVector256Int32(source) << 13;
        var value = (x & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle() * Vector256.Create(5.192296858534828e33f);   // 2^112
        var infOrNaN = Vector256.Equals(x & Vector256.Create(0x0F800000), Vector256.Create(0x0F800000));
        return value | (infOrNaN & Vector256.Create(0x7F800000)).AsSingle();
    }

    /// <summary>
    /// <see cref="HalfToSingle8"/> for finite halves only (an Inf or NaN comes out as a finite float of magnitude
    /// 2^16 … 2^17): four vector ops, half of the exact form's, for rows that <see cref="AllFinite"/> has passed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector256<float> FiniteHalfToSingle8(short* source) => FiniteHalfToScaledSingle8(source) * Vector256.Create(HalfRebias);

    /// <summary>2^112: a finite half's bits moved into a float's place (<see cref="HalfToSingle8"/>) times this are its value.</summary>
    internal const float HalfRebias = 5.192296858534828e33f;

    /// <summary>
    /// Eight finite fp16 bit patterns → 2^−112 × their values as fp32, exactly, in three vector ops: <see
    /// cref="FiniteHalfToSingle8"/> short of its multiply (<see cref="ScaledHalfRow"/> moves the 2^112 to the other factor).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe Vector256<float> FiniteHalfToScaledSingle8(short* source) =>
        ((Avx2.ConvertToVector256Int32(source) << 13) & Vector256.Create(unchecked((int)0x8FFFE000))).AsSingle();

    /// <summary>Whether none of <paramref name="length"/> fp16 bit patterns is Inf or NaN (all-ones exponent); 16 per two vector ops.</summary>
    internal static unsafe bool AllFinite(short* halves, int length)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var max = Vector256<ushort>.Zero;
            for (; i + 16 <= length; i += 16) max = Vector256.Max(max, Vector256.Load((ushort*)halves + i) & Vector256.Create((ushort)0x7FFF));
            if (Vector256.GreaterThanOrEqualAny(max, Vector256.Create((ushort)0x7C00))) return false;
        }
        for (; i < length; i++)
            if ((halves[i] & 0x7C00) == 0x7C00) return false;
        return true;
    }
}
