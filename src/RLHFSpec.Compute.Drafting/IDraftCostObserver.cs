namespace RLHFSpec.Compute.Drafting;

/// <summary>Receives the measured time of each draft-model forward (the strategy selector's cost model refines its draft curve with it).</summary>
public interface IDraftCostObserver
{
    void ObserveDraftForward(int tokens, double seconds);
}
