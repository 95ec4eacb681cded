using RLHFSpec.Compute.Model.Formats;

namespace RLHFSpec.Compute.Tests.Model;

public class AtomicFileTests
{
    [Test]
    public void AFailedWriteLeavesTheTargetUntouchedAndNoTemporaryFile()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            var path = Path.Combine(dir.FullName, "out.jsonl");
            File.WriteAllText(path, "old");
            Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s => { s.Write("half"u8); throw new InvalidOperationException("boom"); }));
            Assert.That(File.ReadAllText(path), Is.EqualTo("old"));
            Assert.That(dir.GetFiles(), Has.Length.EqualTo(1), "no temporary file is left");
            AtomicFile.Write(path, s => s.Write("new"u8));
            Assert.That(File.ReadAllText(path), Is.EqualTo("new"));
        }
        finally { dir.Delete(recursive: true); }
    }
}
