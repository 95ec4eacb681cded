namespace RLHFSpec.Compute.Model.Training;

/// <summary>One parameter tensor under AdamW: views of the shared weight and gradient buffers, plus its moments.</summary>
internal sealed class AdamWParameter
{
    public AdamWParameter(string name, Memory<float> weights, ReadOnlyMemory<float> gradients, bool decay)
    {
        Name = name;
        Weights = weights;
        Gradients = gradients;
        Decay = decay;
        FirstMoment = new float[weights.Length];
        SecondMoment = new float[weights.Length];
    }

    public string Name { get; }

    /// <summary>The shared weight buffer, updated in place (the buffer ONNX Runtime and the engine read).</summary>
    public Memory<float> Weights { get; }
    public ReadOnlyMemory<float> Gradients { get; }
    public bool Decay { get; }
    public float[] FirstMoment { get; }
    public float[] SecondMoment { get; }
}
