using Microsoft.ML.OnnxRuntime;
using RLHFSpec.Compute.Model.Onnx;
using RLHFSpec.Compute.Model.Training;

namespace RLHFSpec.Compute.Model.Transformer.Dense;

/// <summary>
/// The dense parts on ONNX Runtime (any execution provider): one session run for layer 0's part before attention,
/// one per layer for its part after attention fused with the next layer's part before it, one for the head. The
/// weights are bound once as OrtValues over the arena; only the activations are wrapped per run.
/// </summary>
internal sealed class OnnxDenseExecutor : IDenseExecutor
{
    private readonly DecoderGraphSpec _spec;
    private readonly OnnxSession _pre, _postPre, _post, _head;
    // Run inputs with the weights bound once: layer 0's pre-attention graph, then per layer l its post-attention
    // graph (fused with layer l + 1's pre-attention one below the last layer). Activations are set per run.
    private readonly Dictionary<string, OrtValue> _firstInputs;
    private readonly Dictionary<string, OrtValue>[] _layerInputs;
    private readonly Dictionary<string, OrtValue> _headInputs;

    public OnnxDenseExecutor(TransformerWeights weights, OnnxSessionOptions session)
    {
        _spec = weights.Spec;
        var spec = _spec;
        string headWeight = spec.TiedEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        var sessions = new List<OnnxSession>();
        try
        {
            OnnxSession Open(byte[] graph)
            {
                var s = new OnnxSession(graph, session);
                sessions.Add(s);
                return s;
            }
            _pre = Open(DenseGraphs.Pre(spec, ElementType.Float));
            _postPre = Open(DenseGraphs.PostPre(spec, ElementType.Float));
            _post = Open(DenseGraphs.Post(spec, ElementType.Float));
            _head = Open(DenseGraphs.Head(spec, ElementType.Float, headWeight));
        }
        catch
        {
            foreach (var s in sessions) s.Dispose();
            throw;
        }
        var arena = weights.Arena;
        Dictionary<string, OrtValue> Pre(int l) => DenseGraphs.PreWeights(spec).ToDictionary(n => DenseGraphs.PrePrefix + n, n => arena.Value($"model.layers.{l}.{n}"));
        Dictionary<string, OrtValue> Post(int l) => DenseGraphs.PostWeights(spec).ToDictionary(n => DenseGraphs.PostPrefix + n, n => arena.Value($"model.layers.{l}.{n}"));
        _firstInputs = Pre(0);
        _layerInputs = new Dictionary<string, OrtValue>[spec.NumLayers];
        for (int l = 0; l < spec.NumLayers; l++)
        {
            _layerInputs[l] = Post(l);
            if (l + 1 < spec.NumLayers)
                foreach (var (name, value) in Pre(l + 1)) _layerInputs[l][name] = value;
        }
        _headInputs = new Dictionary<string, OrtValue> { [DenseGraphs.FinalNorm] = arena.Value(DenseGraphs.FinalNorm), [headWeight] = arena.Value(headWeight) };
    }

    public string Name => "onnx";

    public void First(DenseActivations a)
    {
        int t = a.Tokens, h = _spec.HiddenSize, qw = _spec.NumHeads * _spec.HeadDim, kvw = _spec.NumKvHeads * _spec.HeadDim;
        using var positions = OrtTensors.Over(a.Positions.AsMemory(0, t), t);
        using var x = OrtTensors.Over(a.X.AsMemory(0, t * h), t, h);
        using var q = OrtTensors.Over(a.Q.AsMemory(0, t * qw), t, qw);
        using var k = OrtTensors.Over(a.K.AsMemory(0, t * kvw), t, kvw);
        using var v = OrtTensors.Over(a.V.AsMemory(0, t * kvw), t, kvw);
        _firstInputs[DenseGraphs.X] = x;
        _firstInputs[DenseGraphs.Positions] = positions;
        _pre.Run(_firstInputs, new Dictionary<string, OrtValue> { [DenseGraphs.Q] = q, [DenseGraphs.K] = k, [DenseGraphs.V] = v });
    }

    public void Next(int layer, DenseActivations a)
    {
        int t = a.Tokens, h = _spec.HiddenSize, qw = _spec.NumHeads * _spec.HeadDim, kvw = _spec.NumKvHeads * _spec.HeadDim;
        using var x = OrtTensors.Over(a.X.AsMemory(0, t * h), t, h);
        using var attended = OrtTensors.Over(a.Attended.AsMemory(0, t * qw), t, qw);
        using var y = OrtTensors.Over(a.Y.AsMemory(0, t * h), t, h);
        var inputs = _layerInputs[layer];
        inputs[DenseGraphs.X] = x;
        inputs[DenseGraphs.Attended] = attended;
        if (layer + 1 < _spec.NumLayers)
        {
            using var positions = OrtTensors.Over(a.Positions.AsMemory(0, t), t);
            using var q = OrtTensors.Over(a.Q.AsMemory(0, t * qw), t, qw);
            using var k = OrtTensors.Over(a.K.AsMemory(0, t * kvw), t, kvw);
            using var v = OrtTensors.Over(a.V.AsMemory(0, t * kvw), t, kvw);
            inputs[DenseGraphs.Positions] = positions;
            _postPre.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Y] = y, [DenseGraphs.Q] = q, [DenseGraphs.K] = k, [DenseGraphs.V] = v });
        }
        else _post.Run(inputs, new Dictionary<string, OrtValue> { [DenseGraphs.Y] = y });
        a.SwapStreams();
    }

    public void Head(DenseActivations a)
    {
        int r = a.Rows, h = _spec.HiddenSize, vocab = _spec.VocabSize;
        using var x = OrtTensors.Over(a.HeadRows.AsMemory(0, r * h), r, h);
        using var logits = OrtTensors.Over(a.Logits.AsMemory(0, r * vocab), r, vocab);
        _headInputs[DenseGraphs.X] = x;
        _head.Run(_headInputs, new Dictionary<string, OrtValue> { [DenseGraphs.Logits] = logits });
    }

    public void Dispose()
    {
        _pre.Dispose();
        _postPre.Dispose();
        _post.Dispose();
        _head.Dispose();
    }
}
