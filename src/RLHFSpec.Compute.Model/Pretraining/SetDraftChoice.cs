using System.Text.Json;
using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Model.Pretraining;

/// <summary>
/// Which of a set's drafts commands use when no <c>--draft</c> is given, and the measurements that chose it:
/// <c>draft.json</c> in the set's folder, written by <c>pretrain</c> after the set's drafts were (re)made. Each
/// candidate's agreement with the policy on the policy's own task rollouts (Σ min(p, q)) and the cost of its decode
/// step against the policy's at batch 1 give a predicted batch-1 speedup of chain drafting
/// (<see cref="PredictedSpeedup"/>); the highest wins. Which draft wins changes when a set is made again: the same
/// recipe on another CPU learns a different policy (its floating-point rounding differs), and on the sets made so
/// far the smaller draft agreed more on one and less on another.
/// </summary>
/// <param name="Draft">The chosen draft's folder name in the set.</param>
/// <param name="Candidates">Every draft measured.</param>
/// <param name="VerifySeconds">The policy's forward at batch 1 (context 128) of 1, 2, … tokens: entry k − 1 is k tokens.</param>
/// <param name="Device">Where the times were measured.</param>
public sealed record SetDraftChoice(string Draft, IReadOnlyList<SetDraftChoice.Candidate> Candidates, IReadOnlyList<double> VerifySeconds, string Device)
{
    /// <summary>One measured draft.</summary>
    /// <param name="Name">Its folder name in the set.</param>
    /// <param name="Agreement">Σ min(p, q) per response position of the policy's rollouts (expected acceptance of one drafted token).</param>
    /// <param name="StepSeconds">Its decode step at batch 1 (context 128).</param>
    /// <param name="Depth">The chain length of the best predicted speedup.</param>
    /// <param name="PredictedSpeedup">Tokens per second of chains of <see cref="Depth"/> over plain decoding, at batch 1, predicted.</param>
    public sealed record Candidate(string Name, double Agreement, double StepSeconds, int Depth, double PredictedSpeedup);

    public const string FileName = "draft.json";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    /// <summary>
    /// The predicted batch-1 speedup of chains of k = 1 … (verify times − 1) tokens from a draft whose tokens are
    /// accepted with probability <paramref name="agreement"/> each (independently: a chain of k emits
    /// (1 − a^(k+1)) / (1 − a) tokens on average), whose decode step costs <paramref name="draftSeconds"/>, verified by
    /// a policy forward of k + 1 tokens (<paramref name="verifySeconds"/>[k]) against plain decoding's one token
    /// (<paramref name="verifySeconds"/>[0]). Returns the best k and its speedup (k = 0, 1.0 when none beats plain decoding).
    /// </summary>
    public static (int Depth, double Speedup) PredictedSpeedup(double agreement, double draftSeconds, IReadOnlyList<double> verifySeconds)
    {
        ArgumentNullException.ThrowIfNull(verifySeconds);
        if (!(agreement >= 0 && agreement <= 1)) throw new ArgumentOutOfRangeException(nameof(agreement), agreement, "must be in [0, 1]");
        if (!(draftSeconds >= 0)) throw new ArgumentOutOfRangeException(nameof(draftSeconds), draftSeconds, "must be >= 0");
        if (verifySeconds.Count == 0 || verifySeconds.Any(s => !(s > 0))) throw new ArgumentException("verify seconds: give positive times of 1, 2, … tokens", nameof(verifySeconds));
        (int Depth, double Speedup) best = (0, 1.0);
        double emitted = 1, power = 1;
        for (int k = 1; k < verifySeconds.Count; k++)
        {
            power *= agreement;
            emitted += power; // 1 + a + … + a^k
            double speedup = emitted / ((verifySeconds[k] + k * draftSeconds) / verifySeconds[0]);
            if (speedup > best.Speedup) best = (k, speedup);
        }
        return best;
    }

    /// <summary>The candidates ranked (best predicted speedup first) and the best one's name as <see cref="Draft"/>.</summary>
    public static SetDraftChoice Choose(IEnumerable<Candidate> candidates, IReadOnlyList<double> verifySeconds, string device)
    {
        var ranked = candidates.OrderByDescending(c => c.PredictedSpeedup).ThenBy(c => c.StepSeconds).ToArray();
        if (ranked.Length == 0) throw new ArgumentException("no draft to choose from", nameof(candidates));
        return new SetDraftChoice(ranked[0].Name, ranked, verifySeconds.ToArray(), device);
    }

    /// <summary>Writes <see cref="FileName"/> into the set's folder (temporary file + rename).</summary>
    public void Save(string setFolder) => AtomicFile.WriteText(Path.Combine(setFolder, FileName), JsonSerializer.Serialize(this, Json));

    /// <summary>
    /// Reads <see cref="FileName"/> from the set's folder: null when there is none; InvalidDataException naming the file
    /// when it cannot be read as a choice or names no draft.
    /// </summary>
    public static SetDraftChoice? TryLoad(string setFolder)
    {
        string path = Path.Combine(setFolder, FileName);
        if (!File.Exists(path)) return null;
        SetDraftChoice? choice;
        try { choice = JsonSerializer.Deserialize<SetDraftChoice>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        if (choice is null || string.IsNullOrWhiteSpace(choice.Draft) || choice.Draft.IndexOfAny(['/', '\\']) >= 0 || choice.Draft is "." or "..")
            throw new InvalidDataException($"{path}: field 'draft' must name a draft folder of the set");
        return choice;
    }
}
