using System.Globalization;
using System.Text;

namespace RLHFSpec.Compute.Generation;

/// <summary>
/// One decode step as the instance saw it: what the planner chose and predicted, and what the step then cost. The
/// selector's mistakes show up here as steps whose <see cref="Seconds"/> are far from
/// <see cref="PredictedSeconds"/> × <see cref="Correction"/>, or whose emitted tokens per second fall below
/// <see cref="OffGoodput"/>.
/// </summary>
/// <param name="Instance">The instance's number in its cluster (0 alone).</param>
/// <param name="Step">The instance's decode step, from 1.</param>
/// <param name="Strategy">The strategy the step ran.</param>
/// <param name="Exploring">Whether the planner chose it only to learn its acceptance (capped drafts).</param>
/// <param name="Live">Samples decoding when the step was planned.</param>
/// <param name="Verified">Samples the step verified (fewer than <paramref name="Live"/> when some did not fit the KV cache).</param>
/// <param name="Rows">Tokens the target forward verified (one per sample plus each sample's drafts).</param>
/// <param name="Emitted">Tokens the step emitted.</param>
/// <param name="PredictedSeconds">The cost model's time for the step before its measured correction (0 for fixed strategies).</param>
/// <param name="Correction">The measured correction the planner multiplied that by (1 for fixed strategies).</param>
/// <param name="Seconds">The step's wall time.</param>
/// <param name="DraftSeconds">Of which drafting.</param>
/// <param name="ForwardSeconds">Of which the target's verify forward and kernel.</param>
/// <param name="PredictedGoodput">The plan's predicted tokens/s (0 for fixed strategies).</param>
/// <param name="OffGoodput">What the planner predicted <c>off</c> would reach on the same samples (0 for fixed strategies).</param>
/// <param name="RunnerUp">The candidate the planner ranked next ("" for fixed strategies, or with no other candidate):
/// with <paramref name="RunnerUpGoodput"/>, how close the choice was, and what a mistaken step would have had instead.</param>
/// <param name="RunnerUpGoodput">That candidate's predicted tokens/s, corrected like the plan's (0 without one).</param>
public sealed record StepRecord(int Instance, long Step, string Strategy, bool Exploring, int Live, int Verified, int Rows, long Emitted,
    double PredictedSeconds, double Correction, double Seconds, double DraftSeconds, double ForwardSeconds,
    double PredictedGoodput, double OffGoodput, string RunnerUp = "", double RunnerUpGoodput = 0);

/// <summary>Receives every decode step of the instances it is given to (see <see cref="InstanceOptions.StepTrace"/>); called from their threads.</summary>
public interface IStepTrace
{
    void Record(StepRecord step);
}

/// <summary>
/// A step trace written as CSV, one row per step, with a <c>run</c> column naming the run it came from. Rows go to a
/// temporary file beside <see cref="Path"/>; <see cref="Complete"/> renames it into place, and disposing without
/// completing deletes it, so a failed run leaves no half-written trace.
/// </summary>
public sealed class StepTraceFile : IStepTrace, IDisposable
{
    public const string Header = "run,instance,step,strategy,exploring,live,verified,rows,emitted,predicted_s,correction,seconds,draft_s,forward_s,predicted_tok_s,off_tok_s,runner_up,runner_up_tok_s";

    private readonly string _temporary;
    private readonly StreamWriter _writer;
    private readonly Lock _lock = new();
    private bool _done;

    public StepTraceFile(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        _temporary = Path + ".tmp";
        _writer = new StreamWriter(_temporary, append: false, new UTF8Encoding(false));
        _writer.WriteLine(Header);
    }

    public string Path { get; }

    /// <summary>The run the next rows belong to (a strategy's name in a benchmark).</summary>
    public string Run { get; set; } = "";

    public void Record(StepRecord s)
    {
        var c = CultureInfo.InvariantCulture;
        string line = string.Join(',', Quote(Run), s.Instance.ToString(c), s.Step.ToString(c), Quote(s.Strategy), s.Exploring ? "1" : "0", s.Live.ToString(c), s.Verified.ToString(c),
            s.Rows.ToString(c), s.Emitted.ToString(c), s.PredictedSeconds.ToString("G6", c), s.Correction.ToString("G4", c), s.Seconds.ToString("G6", c),
            s.DraftSeconds.ToString("G6", c), s.ForwardSeconds.ToString("G6", c), s.PredictedGoodput.ToString("F1", c), s.OffGoodput.ToString("F1", c),
            Quote(s.RunnerUp), s.RunnerUpGoodput.ToString("F1", c));
        lock (_lock) _writer.WriteLine(line);
    }

    /// <summary>Writes the trace out and moves it to <see cref="Path"/>.</summary>
    public void Complete()
    {
        lock (_lock)
        {
            if (_done) return;
            _writer.Dispose();
            File.Move(_temporary, Path, overwrite: true);
            _done = true;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_done) return;
            _writer.Dispose();
            File.Delete(_temporary);
            _done = true;
        }
    }

    // Strategy names hold commas (tree:3,2,6), so text fields are quoted.
    private static string Quote(string text) => "\"" + text.Replace("\"", "\"\"") + "\"";
}
