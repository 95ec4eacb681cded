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

    [Test]
    public void AFailedFolderWriteLeavesTheOldFolderWholeAndNoTemporaryFolder()
    {
        var dir = Directory.CreateTempSubdirectory("rlhfspec-atomic-");
        try
        {
            var target = Path.Combine(dir.FullName, "checkpoint");
            AtomicFile.WriteFolder(target, temp => File.WriteAllText(Path.Combine(temp, "a.txt"), "old"));
            Assert.Throws<InvalidOperationException>(() => AtomicFile.WriteFolder(target, temp =>
            {
                File.WriteAllText(Path.Combine(temp, "a.txt"), "half");
                throw new InvalidOperationException("boom");
            }));
            Assert.That(File.ReadAllText(Path.Combine(target, "a.txt")), Is.EqualTo("old"));
            Assert.That(dir.GetDirectories().Select(d => d.Name), Is.EqualTo(new[] { "checkpoint" }), "no temporary folder is left");
            AtomicFile.WriteFolder(target, temp => File.WriteAllText(Path.Combine(temp, "b.txt"), "new"));
            Assert.That(Directory.GetFiles(target).Select(Path.GetFileName), Is.EqualTo(new[] { "b.txt" }), "replaced as a whole");
            Assert.That(dir.GetDirectories(), Has.Length.EqualTo(1));
        }
        finally { dir.Delete(recursive: true); }
    }
}
