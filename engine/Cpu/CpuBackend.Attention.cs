using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using RLHFSpec.Compute.Engine.Kernels;

namespace RLHFSpec.Compute.Engine.Cpu;

public sealed partial class CpuBackend
{
    /// <summary>Per-worker buffers of the attention kernel, rented once per worker and call.</summary>
    private sealed class AttentionScratch
    {
        public float[] Scores = [];   // [groupSize, visibleSlots]
        public int[] Slots = [];      // [visibleSlots] physical slot of each visible logical slot
        public float[] Row = [];      // [HeadDim] one K or V row converted from fp16
    }

    /// <summary>Below this many visible slots per split a long context is not worth splitting.</summary>
    private const int AttentionMinKeysPerSplit = 512;

    /// <summary>
    /// Multiply-adds (items × visible keys × head dim × group) up to which attention runs on the calling thread.
    /// Measured on 2 cores: a 64-token causal prefill (2^20) takes 1.8 ms serial vs 3 ms with Parallel.For; at 256
    /// tokens (2^24) the parallel path wins (8 vs 9.4 ms).
    /// </summary>
    private const long AttentionSerialWork = 1 << 22;

    /// <summary>
    /// One work item per (query token, KV head): the visible slots are gathered once, then every query head of the
    /// GQA group scores each K row while it is hot, softmax runs per head in fp32 (max-subtracted), and each V row
    /// is accumulated into all heads of the group. fp16 rows go through a per-worker fp32 row buffer.
    /// When there are fewer items than threads and contexts are long (decode of a few samples), each item's slots
    /// are split over several workers (flash-decoding) and the partial softmax states are merged afterwards.
    /// </summary>
    protected override void AttentionCore(in AttentionBatch batch, DeviceBuffer<float> query, DeviceBuffer<uint> keyCache, DeviceBuffer<uint> valueCache, KvLayout layout, DeviceBuffer<float> output)
    {
        var q = Host(query, nameof(query));
        var k = Host(keyCache, nameof(keyCache));
        var v = Host(valueCache, nameof(valueCache));
        var o = Host(output, nameof(output));

        int samples = batch.NumSamples, numTokens = batch.NumTokens;
        // Spans cannot enter the parallel body: copy the metadata into pooled arrays.
        int[] tokenSample = ArrayPool<int>.Shared.Rent(numTokens);
        int[] offsets = ArrayPool<int>.Shared.Rent(samples + 1);
        int[] contexts = ArrayPool<int>.Shared.Rent(samples);
        int[] tables = ArrayPool<int>.Shared.Rent(Math.Max(batch.BlockTables.Length, 1));
        uint[] mask = ArrayPool<uint>.Shared.Rent(Math.Max(batch.TreeMask.Length, 1));
        float[]? partials = null;
        try
        {
            batch.QueryOffsets.CopyTo(offsets);
            batch.ContextLens.CopyTo(contexts);
            batch.BlockTables.CopyTo(tables);
            batch.TreeMask.CopyTo(mask);
            int maxVisible = 0;
            for (int s = 0; s < samples; s++)
            {
                for (int t = offsets[s]; t < offsets[s + 1]; t++) tokenSample[t] = s;
                maxVisible = Math.Max(maxVisible, contexts[s] + offsets[s + 1] - offsets[s]);
            }

            var job = new AttentionJob(q, k, v, o, layout, tokenSample, offsets, contexts, tables, mask,
                batch.TreeMask.IsEmpty, batch.MaskWords, batch.MaxBlocksPerSample, batch.NumHeads, batch.Scale, maxVisible);
            long items = (long)numTokens * layout.NumKvHeads;
            int splits = (int)Math.Min(maxVisible / AttentionMinKeysPerSplit, (Threads + items - 1) / items);
            if (splits <= 1 && items * (long)maxVisible * layout.HeadDim * (batch.NumHeads / layout.NumKvHeads) <= AttentionSerialWork)
            {
                // Small steps (decode, short prefills): waking the thread pool costs more than the work.
                var scratch = job.RentScratch();
                try { for (long item = 0; item < items; item++) job.Run(item, scratch); }
                finally { AttentionJob.ReturnScratch(scratch); }
                return;
            }
            if (splits <= 1)
            {
                Parallel.For(0, items, Parallelism, job.RentScratch,
                    (item, _, scratch) => { job.Run(item, scratch); return scratch; },
                    AttentionJob.ReturnScratch);
                return;
            }
            partials = ArrayPool<float>.Shared.Rent(checked((int)(items * splits * job.PartialLength)));
            var parts = partials;
            Parallel.For(0, items * splits, Parallelism, job.RentScratch,
                (part, _, scratch) => { job.RunPartial(part / splits, (int)(part % splits), splits, parts, scratch); return scratch; },
                AttentionJob.ReturnScratch);
            Parallel.For(0, items, Parallelism, item => job.Combine(item, splits, parts));
        }
        finally
        {
            ArrayPool<int>.Shared.Return(tokenSample);
            ArrayPool<int>.Shared.Return(offsets);
            ArrayPool<int>.Shared.Return(contexts);
            ArrayPool<int>.Shared.Return(tables);
            ArrayPool<uint>.Shared.Return(mask);
            if (partials != null) ArrayPool<float>.Shared.Return(partials);
        }
    }

    private sealed unsafe class AttentionJob(
        CpuBuffer<float> query, CpuBuffer<uint> keyCache, CpuBuffer<uint> valueCache, CpuBuffer<float> output, KvLayout layout,
        int[] tokenSample, int[] offsets, int[] contexts, int[] tables, uint[] mask,
        bool causal, int maskWords, int maxBlocks, int numHeads, float scale, int maxVisible)
    {
        private readonly int _groupSize = numHeads / layout.NumKvHeads;

        /// <summary>Floats of one split's partial state: [groupSize, HeadDim] Σ p·v, then [groupSize] max, then [groupSize] Σ p.</summary>
        public int PartialLength => _groupSize * (layout.HeadDim + 2);

        public AttentionScratch RentScratch() => new()
        {
            Scores = ArrayPool<float>.Shared.Rent(Math.Max(1, _groupSize * maxVisible)),
            Slots = ArrayPool<int>.Shared.Rent(Math.Max(1, maxVisible)),
            Row = ArrayPool<float>.Shared.Rent(layout.HeadDim),
        };

        public static void ReturnScratch(AttentionScratch scratch)
        {
            ArrayPool<float>.Shared.Return(scratch.Scores);
            ArrayPool<int>.Shared.Return(scratch.Slots);
            ArrayPool<float>.Shared.Return(scratch.Row);
        }

        /// <summary>The output rows of the GQA group of <paramref name="item"/> = (token, KV head).</summary>
        private Span<float> OutputHeads(long item) =>
            new(output.Pointer + (item / layout.NumKvHeads * numHeads + item % layout.NumKvHeads * _groupSize) * layout.HeadDim, _groupSize * layout.HeadDim);

        public void Run(long item, AttentionScratch scratch)
        {
            int g = _groupSize;
            var outHeads = OutputHeads(item);
            int visible = GatherSlots(item, scratch.Slots);
            if (visible == 0) { outHeads.Clear(); return; }   // sees nothing: zero output
            Span<float> max = stackalloc float[g], sum = stackalloc float[g];
            Attend(item, scratch.Slots.AsSpan(0, visible), scratch, outHeads, max, sum);
            for (int h = 0; h < g; h++)
            {
                var acc = outHeads.Slice(h * layout.HeadDim, layout.HeadDim);
                TensorPrimitives.Multiply(acc, 1f / sum[h], acc);
            }
        }

        /// <summary>Split <paramref name="split"/> of <paramref name="splits"/> of the item's visible slots, as an unnormalised partial.</summary>
        public void RunPartial(long item, int split, int splits, float[] partials, AttentionScratch scratch)
        {
            int g = _groupSize, d = layout.HeadDim;
            var part = partials.AsSpan((int)((item * splits + split) * PartialLength), PartialLength);
            int visible = GatherSlots(item, scratch.Slots);
            int from = (int)((long)visible * split / splits), to = (int)((long)visible * (split + 1) / splits);
            var max = part.Slice(g * d, g);
            var sum = part.Slice(g * d + g, g);
            if (from == to) { max.Fill(float.NegativeInfinity); sum.Clear(); return; }
            Attend(item, scratch.Slots.AsSpan(from, to - from), scratch, part[..(g * d)], max, sum);
        }

        /// <summary>Merges the splits' partials of <paramref name="item"/>: rescale each by exp(m − M), divide by the rescaled sums.</summary>
        public void Combine(long item, int splits, float[] partials)
        {
            int g = _groupSize, d = layout.HeadDim;
            var outHeads = OutputHeads(item);
            outHeads.Clear();
            for (int h = 0; h < g; h++)
            {
                float big = float.NegativeInfinity;
                for (int z = 0; z < splits; z++) big = Math.Max(big, partials[(item * splits + z) * PartialLength + g * d + h]);
                var acc = outHeads.Slice(h * d, d);
                if (float.IsNegativeInfinity(big)) continue;   // sees nothing
                float total = 0;
                for (int z = 0; z < splits; z++)
                {
                    long at = (item * splits + z) * PartialLength;
                    float m = partials[at + g * d + h];
                    if (float.IsNegativeInfinity(m)) continue;
                    float w = MathF.Exp(m - big);
                    total += w * partials[at + g * d + g + h];
                    TensorPrimitives.MultiplyAdd(partials.AsSpan((int)(at + h * d), d), w, acc, acc);
                }
                TensorPrimitives.Multiply(acc, 1f / total, acc);
            }
        }

        /// <summary>Physical slots the item's token sees, in logical order; returns their count.</summary>
        private int GatherSlots(long item, int[] slots)
        {
            int t = (int)(item / layout.NumKvHeads);
            int s = tokenSample[t], i = t - offsets[s], n = offsets[s + 1] - offsets[s], context = contexts[s];
            int blockSize = layout.BlockSize, visible = 0;
            int last = causal ? context + i + 1 : context + n;
            for (int logical = 0; logical < last; logical++)
            {
                int j = logical - context;
                if (j >= 0 && !causal && (mask[t * maskWords + j / 32] >> (j % 32) & 1) == 0) continue;
                slots[visible++] = tables[s * maxBlocks + logical / blockSize] * blockSize + logical % blockSize;
            }
            return visible;
        }

        /// <summary>
        /// Softmax attention of the item's GQA group over <paramref name="slots"/> (not empty): per head the score max
        /// (<paramref name="max"/>), Σ exp(score − max) (<paramref name="sum"/>) and the unnormalised Σ p·v (<paramref name="acc"/>, [group, HeadDim]).
        /// </summary>
        private void Attend(long item, ReadOnlySpan<int> slots, AttentionScratch scratch, Span<float> acc, Span<float> max, Span<float> sum)
        {
            int t = (int)(item / layout.NumKvHeads), kvHead = (int)(item % layout.NumKvHeads);
            int d = layout.HeadDim, g = _groupSize, count = slots.Length;
            var qHeads = new ReadOnlySpan<float>(query.Pointer + ((long)t * numHeads + kvHead * g) * d, g * d);
            var scores = scratch.Scores.AsSpan(0, g * count);
            for (int k = 0; k < count; k++)
            {
                var key = Row(keyCache, slots[k], kvHead, scratch.Row);
                for (int h = 0; h < g; h++)
                    scores[h * count + k] = scale * TensorPrimitives.Dot(qHeads.Slice(h * d, d), key);
            }
            for (int h = 0; h < g; h++)
            {
                var row = scores.Slice(h * count, count);
                max[h] = TensorPrimitives.Max(row);
                TensorPrimitives.Subtract(row, max[h], row);
                TensorPrimitives.Exp(row, row);
                sum[h] = TensorPrimitives.Sum(row);
            }
            // Cleared only after scoring: the output is never read before it is written.
            acc.Clear();
            for (int k = 0; k < count; k++)
            {
                var value = Row(valueCache, slots[k], kvHead, scratch.Row);
                for (int h = 0; h < g; h++)
                {
                    var accHead = acc.Slice(h * d, d);
                    TensorPrimitives.MultiplyAdd(value, scores[h * count + k], accHead, accHead);
                }
            }
        }

        /// <summary>The fp32 row of <paramref name="kvHead"/> in <paramref name="slot"/>: the cache itself for fp32, converted into <paramref name="buffer"/> for fp16.</summary>
        private ReadOnlySpan<float> Row(CpuBuffer<uint> cache, int slot, int kvHead, float[] buffer)
        {
            int d = layout.HeadDim;
            if (layout.DType == KvDType.F32)
                return new ReadOnlySpan<float>((float*)cache.Pointer + (long)slot * layout.RowWords + (long)kvHead * d, d);
            // Little-endian: the low half of a word is the even element, as the layout says.
            var halves = new ReadOnlySpan<Half>((Half*)(cache.Pointer + (long)slot * layout.RowWords) + (long)kvHead * d, d);
            var row = buffer.AsSpan(0, d);
            HalfToSingle(halves, row);
            return row;
        }
    }

    /// <summary>
    /// fp16 → fp32 for KV rows, 16 at a time with integer ops: the magnitude shifted into a float's place and scaled
    /// by 2^112 rebiases the exponent exactly (subnormal halves included); Inf/NaN get the all-ones exponent back.
    /// TensorPrimitives.ConvertToSingle costs about as much as the attention arithmetic itself at these row lengths.
    /// </summary>
    internal static void HalfToSingle(ReadOnlySpan<Half> source, Span<float> destination)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var bits = MemoryMarshal.Cast<Half, ushort>(source);
            var rebias = Vector256.Create(5.192296858534828e33f);   // 2^112
            for (; i + 16 <= source.Length; i += 16)
            {
                var (low, high) = Vector256.Widen(Vector256.Create<ushort>(bits.Slice(i, 16)));
                Convert(low, rebias).CopyTo(destination.Slice(i, 8));
                Convert(high, rebias).CopyTo(destination.Slice(i + 8, 8));
            }
        }
        for (; i < source.Length; i++) destination[i] = (float)source[i];

        static Vector256<float> Convert(Vector256<uint> h, Vector256<float> rebias)
        {
            var sign = (h & Vector256.Create(0x8000u)) << 16;
            var magnitude = (h & Vector256.Create(0x7FFFu)) << 13;
            var scaled = (magnitude.AsSingle() * rebias).AsUInt32();
            var infOrNaN = Vector256.Equals(h & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
            var value = Vector256.ConditionalSelect(infOrNaN, magnitude | Vector256.Create(0x7F800000u), scaled);
            return (value | sign).AsSingle();
        }
    }
}
