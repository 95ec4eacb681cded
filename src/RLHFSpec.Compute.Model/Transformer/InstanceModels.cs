using RLHFSpec.Compute.Engine;

namespace RLHFSpec.Compute.Model.Transformer;

/// <summary>
/// The models of a generation cluster's instances: instance k gets its own device (queue), a policy and an
/// optional draft <see cref="TransformerModel"/> (own KV caches and ONNX Runtime sessions) over the
/// <b>shared</b> weights, created on first use and kept, so later runs (RLHF iterations, repeated benchmark
/// sides) reuse warm sessions. Weights updated in place are what every instance reads next. Owns what it
/// created; not the weights.
/// </summary>
public sealed class InstanceModels(string device, TransformerWeights policy, TransformerWeights? draft, TransformerOptions runtime) : IDisposable
{
    private readonly List<(ComputeBackend Backend, TransformerModel Policy, TransformerModel? Draft)> _instances = new();

    /// <summary>Models of instance <paramref name="k"/> (created on first use; call from one thread at a time).</summary>
    public (ITargetModel Policy, ITargetModel? Draft) Get(int k)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        ObjectDisposedException.ThrowIf(_disposed, this);
        while (_instances.Count <= k)
        {
            var backend = Devices.OpenForInstance(device, _instances.Count);
            TransformerModel? p = null, d = null;
            try
            {
                p = new TransformerModel(policy, backend, runtime);
                d = draft is null ? null : new TransformerModel(draft, backend, runtime);
            }
            catch
            {
                p?.Dispose();
                backend.Dispose();
                throw;
            }
            _instances.Add((backend, p, d));
        }
        var (_, pk, dk) = _instances[k];
        return (pk, dk);
    }

    /// <summary>Makes every instance's next forward see the weights as they are now (after an optimizer step).</summary>
    public void RefreshWeights()
    {
        foreach (var (_, p, d) in _instances)
        {
            p.RefreshWeights();
            d?.RefreshWeights();
        }
    }

    /// <summary>KV bytes one committed token occupies in a policy cache (what migrating it copies per token).</summary>
    public static double KvBytesPerToken(TransformerModel model) => model.Cache.Config.BytesPerBlock / (double)model.Cache.Config.BlockSize;

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = _instances.Count - 1; i >= 0; i--)
        {
            _instances[i].Draft?.Dispose();
            _instances[i].Policy.Dispose();
            _instances[i].Backend.Dispose();
        }
        _instances.Clear();
    }
}
