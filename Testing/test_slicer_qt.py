"""Qt/CTK stand-ins for running the Slicer module's Python code without Qt, and tests that they keep Qt's
documented behaviour (the module's tests are only as honest as these).

Modelled from Qt's documentation only:
- a signal calls its slots synchronously, in the order they were connected (Qt::DirectConnection), each with
  as many of the signal's leading arguments as the slot takes;
- ``QComboBox.addItem`` on an empty combo box makes item 0 current and emits ``currentIndexChanged(0)``;
  ``clear()`` on a non-empty one emits ``currentIndexChanged(-1)``; ``setCurrentIndex`` emits only on change;
- ``QSpinBox`` clamps to its range and emits ``valueChanged`` only on change;
- ``QTimer.singleShot`` runs its callback later, from the event loop (here: ``process_events()``);
- ``QSettings`` persists values across instances (here: one in-memory store per test).

``load_ui`` builds widgets from a ``.ui`` file (names, classes, nesting, ``SlicerParameterName`` and text
properties), so tests use the module's real ``.ui``.
"""

from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ElementTree


class Signal:
    def __init__(self):
        self._slots = []

    def connect(self, slot):
        self._slots.append(slot)

    def disconnect(self, slot=None):
        self._slots = [] if slot is None else [s for s in self._slots if s != slot]

    def emit(self, *args):
        for slot in list(self._slots):
            slot(*args[:_accepted_arguments(slot, len(args))])


def _accepted_arguments(slot, given: int) -> int:
    """Qt (and PythonQt) call a slot with the signal's leading arguments that the slot takes."""
    import inspect

    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return given
    return min(given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters))


class QObject:
    _signals: tuple = ()

    def __init__(self, parent=None):
        self._properties, self._children, self._parent = {}, [], None
        self.objectName = ""
        for name in self._signals:
            setattr(self, name, Signal())
        if parent is not None:
            self.setParent(parent)

    def setParent(self, parent):
        self._parent = parent
        parent._children.append(self)

    def parent(self):
        return self._parent

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def connect(self, signature, slot):  # PythonQt's string form: widget.connect("clicked(bool)", slot)
        getattr(self, signature.split("(")[0]).connect(slot)

    def findChildren(self, cls=None):
        found = []
        for child in self._children:
            if cls is None or isinstance(child, cls):
                found.append(child)
            found += child.findChildren(cls)
        return found


class QWidget(QObject):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.visible, self.enabled, self.toolTip, self.text = True, True, "", ""

    def isWidgetType(self):
        return True

    def setVisible(self, visible):
        self.visible = bool(visible)

    def setEnabled(self, enabled):
        self.enabled = bool(enabled)

    def setText(self, text):
        self.text = text

    def setToolTip(self, text):
        self.toolTip = text

    def setMRMLScene(self, scene):
        self.mrmlScene = scene

    def layout(self):
        return self

    def addWidget(self, widget):
        widget.setParent(self)


class QLabel(QWidget):
    pass


class QPushButton(QWidget):
    _signals = ("clicked",)

    def click(self):
        if self.enabled:
            self.clicked.emit(False)


class QComboBox(QWidget):
    _signals = ("currentIndexChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._items, self._current = [], -1

    def addItem(self, text, userData=None):
        self._items.append((text, userData))
        if self._current == -1:
            self._current = 0
            self.currentIndexChanged.emit(0)

    def clear(self):
        had_items, self._items = bool(self._items), []
        if had_items:
            self._current = -1
            self.currentIndexChanged.emit(-1)

    def count(self):
        return len(self._items)

    def itemText(self, index):
        return self._items[index][0]

    def setItemText(self, index, text):
        self._items[index] = (text, self._items[index][1])

    def itemData(self, index):
        return self._items[index][1] if 0 <= index < len(self._items) else None

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self._items) if d == data), -1)

    def setCurrentIndex(self, index):
        index = index if -1 <= index < len(self._items) else -1
        if index != self._current:
            self._current = index
            self.currentIndexChanged.emit(index)

    currentIndex = property(lambda self: self._current, setCurrentIndex)
    currentText = property(lambda self: self._items[self._current][0] if self._current >= 0 else "")


class QSpinBox(QWidget):
    _signals = ("valueChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.minimum, self.maximum, self._value = 0, 99, 0

    def setRange(self, low, high):
        self.minimum, self.maximum = low, high
        self.setValue(self._value)

    def setMinimum(self, low):
        self.setRange(low, max(low, self.maximum))

    def setMaximum(self, high):
        self.setRange(min(self.minimum, high), high)

    def setValue(self, value):
        value = min(max(int(value), self.minimum), self.maximum)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    value = property(lambda self: self._value, setValue)


class QPlainTextEdit(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.lines, self.maximumBlockCount = [], 0

    def setMaximumBlockCount(self, count):
        self.maximumBlockCount = count

    def appendPlainText(self, text):
        self.lines += str(text).split("\n")
        if self.maximumBlockCount:
            self.lines = self.lines[-self.maximumBlockCount:]

    def toPlainText(self):
        return "\n".join(self.lines)


class QProgressBar(QWidget):
    value = 0


class QTableWidgetItem:
    def __init__(self, text=""):
        self._text = text

    def text(self):
        return self._text


class QTableWidget(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows = {}
        self._row_count = 0

    def setRowCount(self, count):
        self._row_count = count

    def rowCount(self):
        return self._row_count

    def setItem(self, row, column, item):
        self.rows.setdefault(row, {})[column] = item.text()


class ctkCollapsibleButton(QWidget):
    _signals = ("contentsCollapsed",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def setCollapsed(self, collapsed):
        if bool(collapsed) != self._collapsed:
            self._collapsed = bool(collapsed)
            self.contentsCollapsed.emit(self._collapsed)

    collapsed = property(lambda self: self._collapsed, setCollapsed)


class qMRMLNodeComboBox(QWidget):
    _signals = ("currentNodeChanged",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self.nodeTypes = None, []

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)


class QThread(QObject):
    """``currentThread()`` is the main thread's object on Python's main thread, another object elsewhere."""

    @staticmethod
    def currentThread():
        import threading

        return MAIN_THREAD if threading.current_thread() is threading.main_thread() else QThread()


MAIN_THREAD = QThread()
_pending_single_shots = []


class QTimer(QObject):
    _signals = ("timeout",)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.active, self.interval = False, 0

    def setInterval(self, ms):
        self.interval = ms

    def start(self, ms=None):
        self.active = True

    def stop(self):
        self.active = False

    @staticmethod
    def singleShot(ms, callback):
        _pending_single_shots.append(callback)


def process_events():
    """Run what the event loop would run now: pending single-shot callbacks."""
    while _pending_single_shots:
        _pending_single_shots.pop(0)()


class QSettings:
    store: dict = {}

    def value(self, key, default=None):
        return QSettings.store.get(key, default)

    def setValue(self, key, value):
        QSettings.store[key] = value


class QUrl:
    def __init__(self, url=""):
        self.url = url

    @staticmethod
    def fromLocalFile(path):
        return QUrl("file://" + path)


class QDesktopServices:
    opened = []

    @staticmethod
    def openUrl(url):
        QDesktopServices.opened.append(url.url)
        return True


class QFileDialog:
    @staticmethod
    def getOpenFileName(*args):
        raise AssertionError("a test must decide what the user picks (monkeypatch getOpenFileName)")


WIDGET_CLASSES = {cls.__name__: cls for cls in (QWidget, QLabel, QPushButton, QComboBox, QSpinBox, QPlainTextEdit,
                                                QProgressBar, QTableWidget, ctkCollapsibleButton,
                                                qMRMLNodeComboBox)}
WIDGET_CLASSES["qMRMLWidget"] = QWidget


def load_ui(path):
    """Widgets of a Qt Designer ``.ui`` file (root widget returned), with their names and properties."""
    def build(element, parent):
        widget = WIDGET_CLASSES[element.get("class")](parent)
        widget.objectName = element.get("name")
        for prop in element.findall("property"):
            value = prop.find("string")
            if value is not None and prop.get("name") in ("SlicerParameterName",):
                widget.setProperty(prop.get("name"), value.text)
            elif value is not None and prop.get("name") in ("text", "toolTip"):
                setattr(widget, prop.get("name"), value.text or "")
            elif prop.get("name") == "collapsed":
                widget._collapsed = prop.find("bool").text == "true"
        for child in element.iter("widget"):
            if child is not element and _parent_widget(element, child) is element:
                build(child, widget)
        return widget

    root = ElementTree.parse(path).getroot().find("widget")
    return build(root, None)


def _parent_widget(ancestor, target):
    """The nearest ``widget`` element above ``target`` inside ``ancestor``."""
    def walk(element, nearest):
        for child in element:
            if child is target:
                return nearest
            found = walk(child, child if child.tag == "widget" else nearest)
            if found is not None:
                return found
        return None
    return walk(ancestor, ancestor)


def child_widget_variables(root):
    return types.SimpleNamespace(**{w.objectName: w for w in root.findChildren() if w.objectName})


class _PlaceholderModule(types.ModuleType):
    """Qt/CTK names the code under test never uses get distinct placeholder classes (e.g. for type checks)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        placeholder = type(name, (QWidget,), {})
        setattr(self, name, placeholder)
        return placeholder


def install_qt_modules() -> None:
    """Register the ``qt`` and ``ctk`` stand-ins in ``sys.modules`` (idempotent)."""
    if isinstance(sys.modules.get("qt"), _PlaceholderModule):
        return
    qt, ctk = _PlaceholderModule("qt"), _PlaceholderModule("ctk")
    for name, value in list(globals().items()):
        if isinstance(value, type) and name.startswith("Q"):
            setattr(qt, name, value)
    qt.QVBoxLayout = qt.QFormLayout = QWidget
    ctk.ctkCollapsibleButton, ctk.ctkComboBox = ctkCollapsibleButton, type("ctkComboBox", (QComboBox,), {})
    sys.modules["qt"], sys.modules["ctk"] = qt, ctk


# ----------------------------------------------------------------------------- the stand-ins follow Qt
def test_combo_box_emits_on_first_add_item_and_on_clear_only():
    combo, seen = QComboBox(), []
    combo.currentIndexChanged.connect(seen.append)
    combo.addItem("a")
    combo.addItem("b")
    combo.setCurrentIndex(1)
    combo.setCurrentIndex(1)
    combo.clear()
    combo.clear()
    assert seen == [0, 1, -1]


def test_slots_run_in_connection_order():
    signal, calls = Signal(), []
    signal.connect(lambda: calls.append("first"))
    signal.connect(lambda: calls.append("second"))
    signal.emit()
    assert calls == ["first", "second"]


def test_spin_box_clamps_and_emits_on_change_only():
    box, seen = QSpinBox(), []
    box.valueChanged.connect(seen.append)
    box.setRange(1, 16)
    box.value = 20
    box.value = 16
    assert seen == [1, 16] and box.value == 16


def test_single_shot_runs_later_not_immediately():
    calls = []
    QTimer.singleShot(0, lambda: calls.append(1))
    assert calls == []
    process_events()
    assert calls == [1]


def test_load_ui_reads_the_module_ui():
    from pathlib import Path

    root = load_ui(Path(__file__).resolve().parents[1] / "MRISynthesis" / "Resources" / "UI" / "MRISynthesis.ui")
    ui = child_widget_variables(root)
    assert isinstance(ui.taskComboBox, QComboBox) and ui.taskComboBox.property("SlicerParameterName") == "task"
    assert isinstance(ui.input0, qMRMLNodeComboBox) and ui.advancedCollapsibleButton.collapsed
    assert ui.input0 in ui.inputsCollapsibleButton.findChildren()
