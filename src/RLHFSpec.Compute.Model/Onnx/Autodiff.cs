namespace RLHFSpec.Compute.Model.Onnx;

/// <summary>
/// Reverse-mode automatic differentiation over a <see cref="GraphBuilder"/> graph. The backward pass is added to
/// the same graph as ONNX ops, so one forward+backward graph runs on any execution provider.
/// </summary>
/// <remarks>
/// Nodes are visited in reverse creation order (a reverse topological order). Only nodes on a path from a
/// <c>wrt</c> value to the loss get gradients; a value with several consumers sums their contributions (Add).
/// Integer and boolean inputs (indices, masks, shapes) get no gradient. Broadcasting is undone by summing the
/// incoming gradient over the broadcast axes, which are known statically because only a static 1 broadcasts
/// (see <see cref="GraphBuilder"/>). At ties, Min/Max/ReduceMax pass the gradient to the first/each maximal
/// element (ReduceMax splits it evenly), and Clip passes it at the bounds.
/// </remarks>
public static class Autodiff
{
    private delegate Value?[] Rule(GraphBuilder g, GraphNode node, Value gy, bool[] needs);

    private static readonly Dictionary<string, Rule> Rules = new()
    {
        ["Identity"] = (g, n, gy, _) => new Value?[] { gy },
        ["Neg"] = (g, n, gy, _) => new Value?[] { g.Neg(gy) },
        ["Add"] = (g, n, gy, needs) => new[]
        {
            needs[0] ? Unbroadcast(g, gy, n.Inputs[0]) : null,
            needs[1] ? Unbroadcast(g, gy, n.Inputs[1]) : null,
        },
        ["Sub"] = (g, n, gy, needs) => new[]
        {
            needs[0] ? Unbroadcast(g, gy, n.Inputs[0]) : null,
            needs[1] ? Unbroadcast(g, g.Neg(gy), n.Inputs[1]) : null,
        },
        ["Mul"] = (g, n, gy, needs) => new[]
        {
            needs[0] ? Unbroadcast(g, g.Mul(gy, n.Inputs[1]), n.Inputs[0]) : null,
            needs[1] ? Unbroadcast(g, g.Mul(gy, n.Inputs[0]), n.Inputs[1]) : null,
        },
        // y = a / b: da = gy / b, db = -gy · y / b
        ["Div"] = (g, n, gy, needs) => new[]
        {
            needs[0] ? Unbroadcast(g, g.Div(gy, n.Inputs[1]), n.Inputs[0]) : null,
            needs[1] ? Unbroadcast(g, g.Neg(g.Div(g.Mul(gy, n.Outputs[0]), n.Inputs[1])), n.Inputs[1]) : null,
        },
        // y = a^b: da = gy · b · a^(b−1) (no division by a, so a = 0 is fine), db = gy · y · ln a
        ["Pow"] = (g, n, gy, needs) => new[]
        {
            needs[0]
                ? Unbroadcast(g, g.Mul(gy, g.Mul(n.Inputs[1], g.Pow(n.Inputs[0], g.Sub(n.Inputs[1], One(g, gy))))), n.Inputs[0])
                : null,
            needs[1] ? Unbroadcast(g, g.Mul(g.Mul(gy, n.Outputs[0]), g.Log(n.Inputs[0])), n.Inputs[1]) : null,
        },
        ["Min"] = (g, n, gy, needs) => Select(g, g.LessOrEqual(n.Inputs[0], n.Inputs[1]), n, gy, needs),
        ["Max"] = (g, n, gy, needs) => Select(g, g.GreaterOrEqual(n.Inputs[0], n.Inputs[1]), n, gy, needs),
        // y = √x: dx = gy / (2y)
        ["Sqrt"] = (g, n, gy, _) => new Value?[] { g.Div(g.Mul(gy, Const(g, 0.5, gy)), n.Outputs[0]) },
        // y = 1/x: dx = −gy · y²
        ["Reciprocal"] = (g, n, gy, _) => new Value?[] { g.Neg(g.Mul(gy, g.Mul(n.Outputs[0], n.Outputs[0]))) },
        ["Exp"] = (g, n, gy, _) => new Value?[] { g.Mul(gy, n.Outputs[0]) },
        ["Log"] = (g, n, gy, _) => new Value?[] { g.Div(gy, n.Inputs[0]) },
        // σ' = σ(1 − σ)
        ["Sigmoid"] = (g, n, gy, _) =>
            new Value?[] { g.Mul(gy, g.Mul(n.Outputs[0], g.Sub(One(g, gy), n.Outputs[0]))) },
        ["Cos"] = (g, n, gy, _) => new Value?[] { g.Neg(g.Mul(gy, g.Sin(n.Inputs[0]))) },
        ["Sin"] = (g, n, gy, _) => new Value?[] { g.Mul(gy, g.Cos(n.Inputs[0])) },
        ["Clip"] = ClipRule,
        ["Where"] = (g, n, gy, needs) => new[]
        {
            null,
            needs[1] ? Unbroadcast(g, g.Where(n.Inputs[0], gy, Const(g, 0, gy)), n.Inputs[1]) : null,
            needs[2] ? Unbroadcast(g, g.Where(n.Inputs[0], Const(g, 0, gy), gy), n.Inputs[2]) : null,
        },
        ["Cast"] = (g, n, gy, _) => new Value?[] { n.Inputs[0].IsFloating ? g.Cast(gy, n.Inputs[0].Type) : null },
        // Y = A·B: dA = dY·Bᵀ, dB = Aᵀ·dY, each summed back over broadcast batch axes.
        ["MatMul"] = (g, n, gy, needs) => new[]
        {
            needs[0] ? Unbroadcast(g, g.MatMul(gy, SwapLast(g, n.Inputs[1])), n.Inputs[0]) : null,
            needs[1] ? WeightGradient(g, n.Inputs[0], n.Inputs[1], gy) : null,
        },
        // dx = y ⊙ (gy − Σ gy ⊙ y); uses the (already stable) softmax output, never exp of raw logits.
        ["Softmax"] = (g, n, gy, _) =>
        {
            int axis = (int)n.IntAttr("axis", -1);
            var y = n.Outputs[0];
            return new Value?[] { g.Mul(y, g.Sub(gy, g.ReduceSum(g.Mul(gy, y), new[] { axis }))) };
        },
        // dx = gy − softmax(x) · Σ gy, with softmax(x) = exp(log_softmax(x)) ≤ 1 (no overflow).
        ["LogSoftmax"] = (g, n, gy, _) =>
        {
            int axis = (int)n.IntAttr("axis", -1);
            return new Value?[] { g.Sub(gy, g.Mul(g.Exp(n.Outputs[0]), g.ReduceSum(gy, new[] { axis }))) };
        },
        ["ReduceSum"] = (g, n, gy, _) => new Value?[] { ExpandReduced(g, n, gy), null },
        ["ReduceMean"] = (g, n, gy, _) =>
        {
            var x = n.Inputs[0];
            var count = g.Cast(g.Div(g.Size(x), g.Size(n.Outputs[0])), gy.Type);
            return new Value?[] { g.Div(ExpandReduced(g, n, gy), count), null };
        },
        ["ReduceMax"] = (g, n, gy, _) =>
        {
            var x = n.Inputs[0];
            var axes = ReduceAxes(g, n);
            var max = n.IntAttr("keepdims", 1) == 1 ? n.Outputs[0] : g.Unsqueeze(n.Outputs[0], axes);
            var hit = g.Cast(g.Equal(x, max), x.Type); // broadcast compare; 1 at every maximal element
            var share = g.Div(hit, g.ReduceSum(hit, axes));
            return new Value?[] { g.Mul(share, ExpandReduced(g, n, gy)), null };
        },
        ["Reshape"] = (g, n, gy, _) => new Value?[] { g.Reshape(gy, g.ShapeOf(n.Inputs[0])), null },
        ["Unsqueeze"] = (g, n, gy, _) => new Value?[] { g.Reshape(gy, g.ShapeOf(n.Inputs[0])), null },
        ["Squeeze"] = (g, n, gy, _) => new Value?[] { g.Reshape(gy, g.ShapeOf(n.Inputs[0])), null },
        ["Expand"] = (g, n, gy, _) => new Value?[] { Unbroadcast(g, gy, n.Inputs[0]), null },
        ["Transpose"] = (g, n, gy, _) =>
        {
            var perm = n.IntsAttr("perm")!;
            var inverse = new int[perm.Length];
            for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
            return new Value?[] { g.Transpose(gy, inverse) };
        },
        ["Slice"] = SliceRule,
        ["Concat"] = ConcatRule,
        // Embedding: scatter-add the rows back (repeated ids accumulate). ScatterElements, not ScatterND: ONNX Runtime's
        // CPU ScatterND splits its updates over the intra-op threads and adds repeated ids without synchronisation, so with
        // 2 threads rows lost updates (measured: the default policy's embedding gradient over 64 × 300 tokens of a
        // 16-token vocabulary differed between runs by up to 0.34 in entries of at most 0.73); ScatterElements adds in order.
        ["Gather"] = (g, n, gy, _) =>
        {
            if (n.IntAttr("axis", 0) != 0) throw new NotSupportedException("autodiff: Gather gradient is implemented for axis 0 only");
            var data = n.Inputs[0];
            if (data.Rank != 2 || !data.Shape[1].IsStatic) throw new NotSupportedException("autodiff: Gather gradient is implemented for a 2-D table with a static row width");
            long width = data.Shape[1].Size;
            var zeros = g.ConstantOfShape(g.ShapeOf(data), 0, data.Type);
            var updates = g.Reshape(gy, -1, width);                                   // [N, H]
            var rows = g.Expand(g.Reshape(n.Inputs[1], -1, 1), g.ShapeOf(updates));  // [N, H]: each update's row id
            return new Value?[] { g.ScatterElementsAdd(zeros, rows, updates, 0), null };
        },
        ["GatherElements"] = (g, n, gy, _) =>
        {
            var data = n.Inputs[0];
            var zeros = g.ConstantOfShape(g.ShapeOf(data), 0, data.Type);
            return new Value?[] { g.ScatterElementsAdd(zeros, n.Inputs[1], gy, (int)n.IntAttr("axis", 0)), null };
        },
    };

    /// <summary>The ops that have a gradient rule.</summary>
    public static IReadOnlyCollection<string> DifferentiableOps => Rules.Keys;

    /// <summary>
    /// Adds the backward pass of <paramref name="loss"/> to <paramref name="graph"/> and returns d loss / d w for
    /// each <paramref name="wrt"/> value (same shape as w; zeros where the loss does not depend on w). The loss
    /// is seeded with ones, so a non-scalar loss differentiates the sum of its elements. When
    /// <paramref name="outputPrefix"/> is not null each gradient becomes a graph output named prefix + w.Name.
    /// </summary>
    public static IReadOnlyList<Value> Gradients(GraphBuilder graph, Value loss, IReadOnlyList<Value> wrt,
        string? outputPrefix = "grad_")
    {
        ArgumentNullException.ThrowIfNull(graph);
        if (!ReferenceEquals(loss.Owner, graph)) throw new ArgumentException($"autodiff: loss '{loss.Name}' is not in graph '{graph.Name}'", nameof(loss));
        if (!loss.IsFloating) throw new ArgumentException($"autodiff: loss {loss} must be float or double", nameof(loss));
        foreach (var w in wrt)
        {
            if (!ReferenceEquals(w.Owner, graph)) throw new ArgumentException($"autodiff: '{w.Name}' is not in graph '{graph.Name}'", nameof(wrt));
            if (!w.IsFloating) throw new ArgumentException($"autodiff: cannot differentiate with respect to {w} (not float or double)", nameof(wrt));
        }

        // Snapshot: the backward nodes we add must not be visited.
        var nodes = graph.Nodes.ToArray();

        // Values that depend on some wrt value (forward sweep) ...
        var dependsOnWrt = new HashSet<Value>(wrt);
        foreach (var n in nodes)
            if (n.Inputs.Any(dependsOnWrt.Contains))
                foreach (var o in n.Outputs) dependsOnWrt.Add(o);
        // ... and that the loss depends on (backward sweep): only nodes in both get gradients.
        var feedsLoss = new HashSet<Value> { loss };
        var active = new HashSet<GraphNode>();
        for (int k = nodes.Length - 1; k >= 0; k--)
        {
            var n = nodes[k];
            if (!n.Outputs.Any(feedsLoss.Contains)) continue;
            foreach (var i in n.Inputs) feedsLoss.Add(i);
            if (n.Outputs.Any(dependsOnWrt.Contains)) active.Add(n);
        }

        var grads = new Dictionary<Value, Value>
        {
            [loss] = loss.Rank == 0 ? Const(graph, 1, loss) : graph.ConstantOfShape(graph.ShapeOf(loss), 1, loss.Type),
        };
        for (int k = nodes.Length - 1; k >= 0; k--)
        {
            var n = nodes[k];
            if (!active.Contains(n)) continue;
            if (n.Outputs.Count != 1)
                throw new NotSupportedException($"autodiff: op {n.OpType} with {n.Outputs.Count} outputs has no gradient rule");
            if (!grads.TryGetValue(n.Outputs[0], out var gy)) continue;
            if (!Rules.TryGetValue(n.OpType, out var rule))
                throw new NotSupportedException($"autodiff: op {n.OpType} (output '{n.Outputs[0].Name}') has no gradient rule");
            var needs = n.Inputs.Select(i => i.IsFloating && dependsOnWrt.Contains(i)).ToArray();
            var gx = rule(graph, n, gy, needs);
            for (int i = 0; i < n.Inputs.Count; i++)
            {
                if (!needs[i] || i >= gx.Length || gx[i] is not { } contribution) continue;
                var input = n.Inputs[i];
                grads[input] = grads.TryGetValue(input, out var sum) ? graph.Add(sum, contribution) : contribution;
            }
        }

        var result = new List<Value>();
        foreach (var w in wrt)
        {
            var gw = grads.TryGetValue(w, out var v) ? v : graph.ConstantOfShape(graph.ShapeOf(w), 0, w.Type);
            if (outputPrefix is not null) gw = graph.Output(gw, outputPrefix + w.Name);
            result.Add(gw);
        }
        return result;
    }

    /// <summary>Sums <paramref name="grad"/> over the axes along which <paramref name="target"/> was broadcast.</summary>
    internal static Value Unbroadcast(GraphBuilder g, Value grad, Value target)
    {
        int lead = grad.Rank - target.Rank;
        if (lead < 0) throw new InvalidOperationException($"autodiff: gradient {grad} has lower rank than {target}");
        var axes = new List<int>();
        for (int i = 0; i < grad.Rank; i++)
        {
            if (i < lead) { axes.Add(i); continue; }
            var t = target.Shape[i - lead];
            var d = grad.Shape[i];
            if (t.IsStatic && t.Size == 1 && !(d.IsStatic && d.Size == 1)) axes.Add(i);
        }
        if (axes.Count == 0) return grad;
        var summed = g.ReduceSum(grad, axes.ToArray(), keepDims: true);
        return lead == 0 ? summed : g.Squeeze(summed, Enumerable.Range(0, lead).ToArray());
    }

    private static Value?[] Select(GraphBuilder g, Value firstWins, GraphNode n, Value gy, bool[] needs)
    {
        var zero = Const(g, 0, gy);
        return new[]
        {
            needs[0] ? Unbroadcast(g, g.Where(firstWins, gy, zero), n.Inputs[0]) : null,
            needs[1] ? Unbroadcast(g, g.Where(firstWins, zero, gy), n.Inputs[1]) : null,
        };
    }

    private static Value?[] ClipRule(GraphBuilder g, GraphNode n, Value gy, bool[] needs)
    {
        // The gradient passes where min ≤ x ≤ max (bounds included); the bounds themselves get none.
        var x = n.Inputs[0];
        var inside = g.And(g.GreaterOrEqual(x, n.Inputs[1]), g.LessOrEqual(x, n.Inputs[2]));
        return new Value?[] { g.Where(inside, gy, Const(g, 0, gy)), null, null };
    }

    private static int[] ReduceAxes(GraphBuilder g, GraphNode n)
    {
        var axes = n.IntsAttr("axes") ?? (n.Inputs.Count > 1 ? g.Int64Constant(n.Inputs[1]) : null)
            ?? throw new NotSupportedException($"autodiff: {n.OpType} needs constant axes");
        return axes.Select(a => (int)a).ToArray();
    }

    /// <summary>Brings a reduction's output gradient back to the input's shape (re-inserting dropped axes).</summary>
    private static Value ExpandReduced(GraphBuilder g, GraphNode n, Value gy)
    {
        if (n.IntAttr("keepdims", 1) == 0) gy = g.Unsqueeze(gy, ReduceAxes(g, n));
        return g.Expand(gy, g.ShapeOf(n.Inputs[0]));
    }

    /// <summary>Slice's gradient: zero-pad the incoming gradient back to the input's (runtime) shape.</summary>
    private static Value?[] SliceRule(GraphBuilder g, GraphNode n, Value gy, bool[] needs)
    {
        var x = n.Inputs[0];
        var starts = g.Int64Constant(n.Inputs[1]);
        var axes = n.Inputs.Count > 3 ? g.Int64Constant(n.Inputs[3]) : null;
        if (starts is null || axes is null || n.Inputs.Count > 4)
            throw new NotSupportedException("autodiff: Slice gradient needs constant starts/axes and step 1");
        var full = new long[x.Rank];
        var negative = new long[x.Rank];
        for (int i = 0; i < axes.Length; i++)
        {
            full[axes[i]] = starts[i];
            negative[axes[i]] = starts[i] < 0 ? 1 : 0;
        }
        var dims = g.ShapeOf(x);
        // begin = clamp(start (+ dim if negative), 0, dim); end padding = dim − out − begin
        var begin = g.Max(g.Min(g.Add(g.Int64s(full), g.Mul(g.Int64s(negative), dims)), dims), g.Int64s(0));
        var end = g.Sub(g.Sub(dims, g.ShapeOf(n.Outputs[0])), begin);
        return new Value?[] { g.Pad(gy, g.Concat(0, begin, end), x.Shape) };
    }

    private static Value?[] ConcatRule(GraphBuilder g, GraphNode n, Value gy, bool[] needs)
    {
        int axis = (int)n.IntAttr("axis", 0);
        var sizes = g.Concat(0, n.Inputs.Select(i => g.Slice(g.ShapeOf(i), new long[] { axis }, new long[] { axis + 1 }, new[] { 0 })).ToArray());
        var pieces = g.Split(gy, axis, sizes, n.Inputs.Select(i => i.Shape).ToArray());
        return pieces.Select((p, i) => needs[i] ? p : null).ToArray();
    }

    /// <summary>
    /// dB for Y = A·B. When B is a plain matrix (a weight [K, N]) and A has batch axes ([B, T, K]), fold the batch
    /// axes into the rows first: Aᵀ·dY over [B·T, K] and [B·T, N] gives [K, N] directly, instead of a
    /// [B, K, N] per-batch product summed afterwards (B times the weight's memory).
    /// </summary>
    private static Value WeightGradient(GraphBuilder g, Value a, Value b, Value gy)
    {
        var k = a.Shape[^1];
        var cols = gy.Shape[^1];
        if (b.Rank == 2 && a.Rank > 2 && k.IsStatic && cols.IsStatic)
            return g.MatMul(g.Transpose(g.Reshape(a, -1, k.Size), 1, 0), g.Reshape(gy, -1, cols.Size));
        return Unbroadcast(g, g.MatMul(SwapLast(g, a), gy), b);
    }

    private static Value SwapLast(GraphBuilder g, Value x)
    {
        var perm = Enumerable.Range(0, x.Rank).ToArray();
        (perm[^1], perm[^2]) = (perm[^2], perm[^1]);
        return g.Transpose(x, perm);
    }

    private static Value Const(GraphBuilder g, double value, Value like) => g.Scalar(value, like.Type);
    private static Value One(GraphBuilder g, Value like) => Const(g, 1, like);
}
